//! The search filters the LDAP source sends, and the one place client text enters them.
//!
//! A username (and a DN found in the directory) only ever appears in a filter escaped per
//! RFC 4515 (`*`, `(`, `)`, `\` and NUL as `\2a`, `\28`, `\29`, `\5c`, `\00`), so `*` or
//! `)(uid=*` is a literal value that matches nobody, never a wildcard or a second clause.
//! No DN is ever built from a username: the user's DN is whatever the search returns.

use ldap3::ldap_escape;

/// `(&(uid=<escaped>)<user_filter>)`: the user named `username`, if the filter admits them.
pub fn user(uid_attribute: &str, username: &str, user_filter: Option<&str>) -> String {
    let uid = format!("({uid_attribute}={})", ldap_escape(username));
    match user_filter {
        Some(extra) => format!("(&{uid}{extra})"),
        None => uid,
    }
}

/// The groups that list the user: `groupOfNames` (`member`), `groupOfUniqueNames`
/// (`uniqueMember`) by DN, `posixGroup` (`memberUid`) by the uid value.
pub fn groups(dn: &str, uid: &str) -> String {
    let dn = ldap_escape(dn);
    let uid = ldap_escape(uid);
    format!(
        "(|(&(objectClass=groupOfNames)(member={dn}))(&(objectClass=groupOfUniqueNames)(uniqueMember={dn}))(&(objectClass=posixGroup)(memberUid={uid})))"
    )
}

/// The `cn` of a group DN from a `memberOf` value (`cn=registry-devs,ou=groups,...`), if its
/// first RDN is a `cn` and, when `group_base` is set, the DN lies under it.
pub fn cn_of_member_of(dn: &str, group_base: Option<&str>) -> Option<String> {
    if let Some(base) = group_base {
        let (dn_l, base_l) = (dn.to_ascii_lowercase(), base.to_ascii_lowercase());
        let under =
            dn_l.ends_with(&base_l) && dn_l[..dn_l.len() - base_l.len()].trim_end().ends_with(',');
        if !under {
            return None;
        }
    }
    let (attribute, rest) = dn.split_once('=')?;
    if !attribute.trim().eq_ignore_ascii_case("cn") {
        return None;
    }
    // The value runs to the first comma that is not escaped.
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => value.push(chars.next()?),
            ',' | '+' => break,
            _ => value.push(ch),
        }
    }
    let value = value.trim().to_owned();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_escaped_so_no_injection_adds_a_clause_or_a_wildcard() {
        assert_eq!(user("uid", "alice", None), "(uid=alice)");
        assert_eq!(user("uid", "*", None), "(uid=\\2a)");
        assert_eq!(user("uid", ")(uid=*", None), "(uid=\\29\\28uid=\\2a)");
        assert_eq!(
            user("uid", "alice)(|(uid=*", Some("(objectClass=person)")),
            "(&(uid=alice\\29\\28|\\28uid=\\2a)(objectClass=person))"
        );
        assert_eq!(user("uid", "a\0b\\c", None), "(uid=a\\00b\\5cc)");
        for hostile in [
            "*",
            ")(uid=*",
            "alice)(|(uid=*",
            "a\0",
            "\\",
            "x)(objectClass=*",
        ] {
            let filter = user("uid", hostile, None);
            let parsed = ldap3::parse_filter(filter.as_str());
            assert!(parsed.is_ok(), "{filter}");
            // One clause: the only unescaped parentheses are the outer pair.
            assert_eq!(filter.matches('(').count(), 1, "{filter}");
            assert!(!filter[1..].contains("=*"), "{filter}");
        }
    }

    #[test]
    fn group_filters_escape_the_dn_and_the_uid() {
        let filter = groups("cn=a\\,b*,dc=x", "al*ce");
        assert!(filter.contains("(member=cn=a\\5c,b\\2a,dc=x)"), "{filter}");
        assert!(filter.contains("(memberUid=al\\2ace)"), "{filter}");
        assert!(ldap3::parse_filter(filter.as_str()).is_ok());
    }

    #[test]
    fn member_of_values_give_their_cn_under_the_group_base() {
        let base = Some("ou=groups,dc=example,dc=com");
        assert_eq!(
            cn_of_member_of("cn=registry-devs,ou=groups,dc=example,dc=com", base).as_deref(),
            Some("registry-devs")
        );
        assert_eq!(
            cn_of_member_of("CN=Dev\\, Ops,OU=Groups,DC=example,DC=com", base).as_deref(),
            Some("Dev, Ops")
        );
        assert_eq!(
            cn_of_member_of("cn=x,ou=elsewhere,dc=example,dc=com", base),
            None
        );
        assert_eq!(
            cn_of_member_of("uid=x,ou=groups,dc=example,dc=com", base),
            None
        );
        assert_eq!(
            cn_of_member_of("cn=x,ou=elsewhere", None).as_deref(),
            Some("x")
        );
    }
}
