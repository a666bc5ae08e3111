//! Debian's OpenLDAP server (`slapd`) as the tests' own directory: a temp dir with a
//! `slapd.conf` (mdb backend; the core, cosine, inetorgperson and nis schemas from
//! `/etc/ldap/schema`, plus Active Directory's `userAccountControl` and `memberOf` as a tiny
//! schema of our own), a test CA and a server certificate for 127.0.0.1 made with the openssl
//! CLI, data loaded with `slapadd` before start. It listens on two loopback ports: ldaps (what
//! the gateway uses) and plain ldap (what the tests' own `ldapmodify` uses to change people
//! and groups while it runs). Stopped by pid with SIGTERM (slapd shuts down cleanly on it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{process, require_tool};

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
const ROOT_PASSWORD: &str = "root-secret-for-the-tests";
pub const SERVICE_DN: &str = "cn=portcullis,ou=services,dc=example,dc=com";
/// The gateway's service account password (`ldap.bind_password`).
pub const SERVICE_PASSWORD: &str = "svc-bind-S3cret-never-logged";

/// The directory's people: (uid, password). Groups: see [`ldif`].
pub mod people {
    /// registry-devs (groupOfNames member): developer of mygroup.
    pub const JDOE: (&str, &str) = ("jdoe", "jdoe-dir-Pass-1");
    /// registry-readers (posixGroup memberUid): reporter of mygroup.
    pub const RITA: (&str, &str) = ("rita", "rita-dir-Pass-2");
    /// registry-uniq (groupOfUniqueNames uniqueMember): developer of mygroup/second.
    pub const UNA: (&str, &str) = ("una", "una-dir-Pass-3");
    /// registry-devs only through `memberOf` on her own entry (Active Directory's way).
    pub const MONA: (&str, &str) = ("mona", "mona-dir-Pass-4");
    /// In registry-devs, but disabled (userAccountControl 514 = NORMAL_ACCOUNT | DISABLE).
    pub const DIS: (&str, &str) = ("dis", "dis-dir-Pass-5");
    /// registry-admins: the admin group.
    pub const ADAM: (&str, &str) = ("adam", "adam-dir-Pass-6");
    /// Also in gateway.yaml (PATs only, reporter of mygroup/myproject).
    pub const BOB: (&str, &str) = ("bob", "bob-dir-Pass-7");
    /// Also in gateway.yaml WITH a password_hash: a local account the directory may not log in as.
    pub const ALICE: (&str, &str) = ("alice", "alice-dir-Pass-8");
    /// Also in gateway.yaml, blocked there.
    pub const DAVE: (&str, &str) = ("dave", "dave-dir-Pass-9");

    pub const ALL: [(&str, &str); 9] = [JDOE, RITA, UNA, MONA, DIS, ADAM, BOB, ALICE, DAVE];
}

/// Active Directory's two attributes the gateway reads, for an OpenLDAP test server.
const AD_SCHEMA: &str = "attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.3.6.1.4.1.32473.1.1 NAME 'portcullisTestAD' AUXILIARY MAY ( userAccountControl $ memberOf ) )
";

/// The initial directory.
fn ldif() -> String {
    let mut text = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: portcullis\nuserPassword: {SERVICE_PASSWORD}\n\n"
    );
    for (uid, password) in people::ALL {
        text.push_str(&format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: portcullisTestAD\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {password}\n"
        ));
        match uid {
            "dis" => text.push_str("userAccountControl: 514\n"),
            "mona" => text.push_str(&format!(
                "userAccountControl: 512\nmemberOf: cn=registry-devs,ou=groups,{SUFFIX}\n"
            )),
            _ => {}
        }
        text.push('\n');
    }
    let person = |uid: &str| format!("uid={uid},ou=people,{SUFFIX}");
    text.push_str(&format!(
        "dn: cn=registry-devs,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: registry-devs\nmember: {}\nmember: {}\n\n",
        person("jdoe"),
        person("dis")
    ));
    text.push_str(&format!(
        "dn: cn=registry-readers,ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: registry-readers\ngidNumber: 5000\nmemberUid: rita\n\n"
    ));
    text.push_str(&format!(
        "dn: cn=registry-uniq,ou=groups,{SUFFIX}\nobjectClass: groupOfUniqueNames\ncn: registry-uniq\nuniqueMember: {}\n\n",
        person("una")
    ));
    text.push_str(&format!(
        "dn: cn=registry-admins,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: registry-admins\nmember: {}\n\n",
        person("adam")
    ));
    text
}

/// A running slapd, stopped on drop.
pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The ldaps port (the gateway's).
    pub port: u16,
    /// The plain ldap port (the tests' ldapmodify).
    pub plain_port: u16,
}

impl Slapd {
    pub fn start() -> Slapd {
        let slapadd = require_tool("slapadd", "slapd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_certificates(d);
        std::fs::write(d.join("ad.schema"), AD_SCHEMA).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("slapd.conf"), config(d)).unwrap();
        std::fs::write(d.join("initial.ldif"), ldif()).unwrap();
        let out = process::run(
            {
                let mut c = Command::new(slapadd);
                c.arg("-f").arg(d.join("slapd.conf"));
                c.arg("-l").arg(d.join("initial.ldif"));
                c
            },
            None,
        );
        assert!(out.ok, "slapadd failed:\n{}", out.combined());
        let mut slapd = Slapd {
            child: None,
            dir,
            port: 0,
            plain_port: 0,
        };
        slapd.run_on_free_ports();
        slapd
    }

    fn run_on_free_ports(&mut self) {
        let (child, (port, plain_port)) = process::start_on_free_port(|port| {
            let plain = super::free_port();
            self.spawn(port, plain).map(|child| (child, (port, plain)))
        });
        self.child = Some(child);
        self.port = port;
        self.plain_port = plain_port;
    }

    fn spawn(&self, port: u16, plain: u16) -> Result<Child, String> {
        let binary = require_tool("slapd", "slapd");
        let d = self.dir.path();
        let log_path = d.join("slapd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        // `-d` keeps slapd in the foreground (and logs to stderr): its pid is ours to stop.
        let mut child = Command::new(binary)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldaps://127.0.0.1:{port}/ ldap://127.0.0.1:{plain}/"
            ))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        process::wait_ready(
            &mut child,
            "slapd",
            Duration::from_secs(15),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok()
            },
        )
        .map(|()| child)
    }

    /// Stop the server (the gateway now finds nothing listening).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop_or_fail(&mut child, "slapd", SLAPD_STOP);
        }
    }

    /// Start it again: same data, same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "slapd is running");
        let child = self
            .spawn(self.port, self.plain_port)
            .unwrap_or_else(|log| panic!("slapd did not come back: {log}"));
        self.child = Some(child);
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.port)
    }

    /// `ldap://127.0.0.1:PORT` (StartTLS is offered there too).
    pub fn plain_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.plain_port)
    }

    /// The test CA that signed the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The `ldap:` section of a gateway.yaml for this directory (the bind password through
    /// `${LDAP_BIND_PASSWORD}`, which the caller sets), with `sync_interval`.
    pub fn gateway_section(&self, sync_interval: &str) -> String {
        let transport = format!("url: {}\n  ca: \"{}\"", self.url(), self.ca().display());
        self.gateway_section_with(&transport, sync_interval)
    }

    /// [`Slapd::gateway_section`] with `transport` for the url, ca and start_tls lines.
    pub fn gateway_section_with(&self, transport: &str, sync_interval: &str) -> String {
        format!(
            r#"ldap:
  {transport}
  bind_dn: "{SERVICE_DN}"
  bind_password: "${{LDAP_BIND_PASSWORD}}"
  user_base: "ou=people,{SUFFIX}"
  uid_attribute: uid
  user_filter: "(objectClass=inetOrgPerson)"
  group_base: "ou=groups,{SUFFIX}"
  group_links:
    - {{ cn: registry-devs, path: mygroup, role: developer }}
    - {{ cn: registry-readers, path: mygroup, role: reporter }}
    - {{ cn: registry-uniq, path: mygroup/second, role: developer }}
  admin_group: registry-admins
  sync_interval: {sync_interval}
  timeout: 3s
"#
        )
    }

    /// Apply an LDIF change (ldapmodify as the root DN over the plain loopback port).
    pub fn modify(&self, ldif: &str) {
        let tool = require_tool("ldapmodify", "ldap-utils");
        let mut command = Command::new(tool);
        command
            .args(["-x", "-H"])
            .arg(format!("ldap://127.0.0.1:{}", self.plain_port))
            .args(["-D", ROOT_DN, "-w", ROOT_PASSWORD]);
        let out = process::run(command, Some(ldif));
        assert!(out.ok, "ldapmodify failed:\n{}", out.combined());
    }

    /// Take `uid` out of the groupOfNames `group`.
    pub fn remove_member(&self, group: &str, uid: &str) {
        self.modify(&format!(
            "dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid={uid},ou=people,{SUFFIX}\n"
        ));
    }

    /// Delete the person `uid`.
    pub fn delete_person(&self, uid: &str) {
        self.modify(&format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nchangetype: delete\n"
        ));
    }

    /// Set AD's disabled bit on `uid`.
    pub fn disable(&self, uid: &str) {
        self.modify(&format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
        ));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

const SLAPD_STOP: &[(&str, Duration)] = &[("TERM", Duration::from_secs(10))];

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(d: &Path) -> String {
    let d = d.display();
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {d}/ad.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.crt
TLSCertificateFile {d}/server.crt
TLSCertificateKeyFile {d}/server.key
database mdb
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {d}/data
maxsize 33554432
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"
    )
}

/// A CA and a server certificate it signed, for 127.0.0.1 and localhost (openssl CLI).
fn make_certificates(d: &Path) {
    let openssl = require_tool("openssl", "openssl");
    let run = |args: &[&str]| {
        let mut command = Command::new(&openssl);
        command.current_dir(d).args(args);
        let out = process::run(command, None);
        assert!(out.ok, "openssl {args:?}:\n{}", out.combined());
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=portcullis test LDAP CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
}
