//! A large `gateway.yaml` read on every core: its big lists (`users:`, `groups:`,
//! `projects:`) cut at item boundaries into pieces that [`super::direct`] reads at the same
//! time, the items joined back in order.
//!
//! At 100,000 projects the load was one core's work for well over a second, nearly all of it
//! libyaml's scanner and serde's replay of its events, and that work is linear in the text: a
//! list item reads the same whatever came before it, so two halves read on two cores take half
//! the time. "Reads the same" holds only for text simple enough to be sure of, so the cut is
//! made only when every line of the file passes [`simple_line`] and the top level is plain
//! block style ([`plan`] says exactly what it refuses: anchors, aliases, tags, merge keys,
//! `${`, document markers, tabs, CR, BOM and the other line breaks libyaml knows, quoted or
//! flow values spanning lines, block scalars, duplicate top-level keys). Any doubt, and any
//! error in any piece, and the caller reads the whole text the old way, so every message and
//! line number stays exactly what it was.

use serde::Deserialize;

use super::direct;
use super::file::{GatewayFile, GroupFile, ProjectFile, UserFile};

/// Below this size one parse is fast enough that a thread would cost more than it saves.
const MIN_BYTES: usize = 1 << 20;

/// The top-level lists that may be cut (their items are most of a large directory's text).
const LISTS: [&str; 3] = ["users", "groups", "projects"];

/// `GatewayFile` read from `text` in pieces on several cores, or `None` when the text is small,
/// is not simple enough to be sure the pieces read as the whole does, or any piece fails: the
/// caller then reads it whole, as before.
pub(super) fn read(text: &str) -> Option<GatewayFile> {
    if text.len() < MIN_BYTES {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(4);
    read_in(text, threads, (text.len() / PIECE_BYTES).max(threads))
}

/// A piece's text, about: serde_yaml holds every event of a document (an `Event` and a `Mark`
/// for each token, several times the text's size) until the document is read, so one piece of
/// half a 30 MB file held hundreds of MiB, every page of it new to the process (the kernel
/// zeroing them was 44% of the load's CPU, growing the event vector's copies another 25%).
/// Pieces this small reuse the same few MiB on each thread, one after the other.
const PIECE_BYTES: usize = 256 << 10;

/// [`read`] in `pieces` pieces on `threads` threads (this one among them) whatever the text's
/// size (the tests and the fuzz target).
pub(super) fn read_in(text: &str, threads: usize, pieces: usize) -> Option<GatewayFile> {
    if threads < 2 || pieces < 2 {
        return None;
    }
    let plan = plan(text, pieces)?;
    let first = plan.first(text);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    // Each thread takes the next piece until none is left (on a busy machine a fixed share
    // would wait for the slowest thread), one document buffer reused for all it takes.
    let work = || {
        use std::sync::atomic::Ordering::Relaxed;
        let mut done = Vec::new();
        let mut doc = String::new();
        while !failed.load(Relaxed) {
            let index = next.fetch_add(1, Relaxed);
            let Some(ranges) = plan.pieces.get(index) else {
                break;
            };
            Plan::piece(text, ranges, &mut doc);
            match simple(&doc)
                .then(|| direct::read_as::<Tail>(&doc))
                .flatten()
            {
                Some(tail) => done.push((index, tail)),
                None => failed.store(true, Relaxed),
            }
        }
        done
    };
    let (file, mut tails) = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let file = simple(&first).then(|| direct::read(&first)).flatten();
        if file.is_none() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        drop(first);
        let mut tails = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => tails.extend(done),
                Err(_) => failed.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
        (file, tails)
    });
    if failed.into_inner() {
        return None;
    }
    let mut file = file?;
    tails.sort_unstable_by_key(|&(index, _)| index);
    file.users
        .reserve_exact(tails.iter().map(|(_, t)| t.users.len()).sum());
    file.groups
        .reserve_exact(tails.iter().map(|(_, t)| t.groups.len()).sum());
    file.projects
        .reserve_exact(tails.iter().map(|(_, t)| t.projects.len()).sum());
    for (_, tail) in tails {
        file.users.extend(tail.users);
        file.groups.extend(tail.groups);
        file.projects.extend(tail.projects);
    }
    Some(file)
}

/// The later pieces of the lists: each list's items as the whole file would hold them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tail {
    #[serde(default)]
    users: Vec<UserFile>,
    #[serde(default)]
    groups: Vec<GroupFile>,
    #[serde(default)]
    projects: Vec<ProjectFile>,
}

/// Where the text is cut: for each piece after the first, the byte ranges of the items it
/// takes from each list (the first piece is the text without them).
#[derive(Debug)]
struct Plan {
    /// `(list's key, start, end)` per later piece, in the text's order.
    pieces: Vec<Vec<(&'static str, usize, usize)>>,
}

impl Plan {
    /// The first piece's text: the file without the later pieces' items.
    fn first(&self, text: &str) -> String {
        let mut cuts: Vec<(usize, usize)> = self
            .pieces
            .iter()
            .flatten()
            .map(|&(_, start, end)| (start, end))
            .collect();
        cuts.sort_unstable();
        let mut first =
            String::with_capacity(text.len() - cuts.iter().map(|(s, e)| e - s).sum::<usize>());
        let mut at = 0;
        for (start, end) in cuts {
            first.push_str(&text[at..start]);
            at = end;
        }
        first.push_str(&text[at..]);
        first
    }

    /// A later piece's document, into `doc`: `key:` and its items, for each list it has items
    /// of.
    fn piece(text: &str, ranges: &[(&'static str, usize, usize)], doc: &mut String) {
        doc.clear();
        for &(key, start, end) in ranges {
            doc.push_str(key);
            doc.push_str(":\n");
            doc.push_str(&text[start..end]);
            if !doc.ends_with('\n') {
                doc.push('\n');
            }
        }
    }
}

/// One top-level key and where its lines are.
struct Section<'t> {
    key: &'t str,
    /// Whether anything follows the key's `:` on its line (then it is no list to cut).
    inline: bool,
    /// The byte range of the lines after the key's line, up to the next top-level key.
    body: (usize, usize),
}

/// How to cut `text` into `pieces`, or `None` when it is not simple enough to be sure of (or
/// has no list worth cutting).
fn plan(text: &str, pieces: usize) -> Option<Plan> {
    // Each piece's lines are checked by the thread that reads it ([`simple`]); these two
    // anywhere in the text, comments included, are enough to give up at once.
    if text.contains("${") || text.contains("<<") {
        return None;
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let content = line.strip_suffix('\n').unwrap_or(line);
        if blank_or_comment(content) || content.starts_with(' ') {
            if let Some(section) = sections.last_mut() {
                section.body.1 = at;
            } else if !blank_or_comment(content) {
                return None; // an indented line before the first key
            }
            continue;
        }
        let (key, after) = top_level_key(content)?;
        if sections.iter().any(|s| s.key == key) {
            return None; // the whole parse refuses it, with its own message
        }
        sections.push(Section {
            key,
            inline: !blank_or_comment(after),
            body: (at, at),
        });
        let _ = start;
    }
    let mut cut = vec![Vec::new(); pieces - 1];
    for section in &sections {
        let Some(&key) = LISTS.iter().find(|&&k| k == section.key) else {
            continue;
        };
        if section.inline {
            continue;
        }
        let items = item_starts(&text[section.body.0..section.body.1])?;
        let Some(&first) = items.first() else {
            continue;
        };
        let (body_start, body_end) = section.body;
        let span = body_end - body_start - first;
        // Cut j at the first item that starts at or after j/pieces of the list's text, each
        // piece at least one item; the first piece keeps the items up to the first cut.
        let mut bounds = Vec::with_capacity(pieces);
        for j in 1..pieces {
            let target = first + span * j / pieces;
            let next = items.partition_point(|&s| s < target).max(1);
            if let Some(&s) = items.get(next) {
                if bounds.last().is_none_or(|&b| b < s) {
                    bounds.push(s);
                }
            }
        }
        for (j, &start) in bounds.iter().enumerate() {
            let end = bounds.get(j + 1).copied().unwrap_or(body_end - body_start);
            cut[j].push((key, body_start + start, body_start + end));
        }
    }
    cut.retain(|ranges| !ranges.is_empty());
    if cut.is_empty() {
        return None;
    }
    Some(Plan { pieces: cut })
}

/// Where each item of a block list starts in `body` (the lines after its key), or `None` when
/// the body is not a plain block list: every line holding anything but a comment is indented
/// at least as far as the first item's `- `, and one that is indented exactly that far starts
/// an item (`- ` and something). An empty `Vec`: the body is no list (nothing to cut).
fn item_starts(body: &str) -> Option<Vec<usize>> {
    let mut starts = Vec::new();
    let mut indent = None;
    let mut at = 0;
    for line in body.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let content = line.strip_suffix('\n').unwrap_or(line);
        if blank_or_comment(content) {
            continue;
        }
        let spaces = content.len() - content.trim_start_matches(' ').len();
        let rest = &content[spaces..];
        let indent = *indent.get_or_insert(spaces);
        if spaces < indent || indent == 0 {
            return None;
        }
        if spaces == indent {
            let item = rest
                .strip_prefix("- ")
                .is_some_and(|r| !r.trim_start().is_empty() && !r.trim_start().starts_with('#'));
            if !item {
                return if starts.is_empty() {
                    Some(starts)
                } else {
                    None
                };
            }
            starts.push(start);
        }
    }
    Some(starts)
}

/// A top-level line `key:` or `key: value`: the key (letters, digits, `_`) and what follows
/// the `:`; `None` for anything else at column 0 (`---`, `...`, `- `, `? `, a quoted key, a
/// directive).
fn top_level_key(line: &str) -> Option<(&str, &str)> {
    let (key, after) = line.split_once(':')?;
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (plain && (after.is_empty() || after.starts_with(' '))).then_some((key, after))
}

/// Nothing but spaces, or a comment.
fn blank_or_comment(line: &str) -> bool {
    let rest = line.trim_start_matches(' ');
    rest.is_empty() || rest.starts_with('#')
}

/// Whether every line of a piece is simple enough ([`simple_line`]) and the piece holds no
/// byte that makes YAML read it otherwise than line by line: a tab, a CR, a BOM, or one of the
/// line breaks only libyaml counts (NEL, LS, PS). Every line of the file is in exactly one
/// piece, so the pieces' threads share this check.
fn simple(piece: &str) -> bool {
    let bytes = piece.as_bytes();
    let odd = bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\t' | b'\r' => true,
        0xC2 => bytes.get(i + 1) == Some(&0x85),
        0xE2 => bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)),
        0xEF => bytes.get(i + 1) == Some(&0xBB) && bytes.get(i + 2) == Some(&0xBF),
        _ => false,
    });
    !odd && piece.split('\n').all(simple_line)
}

/// Whether one line (without its line break) holds only tokens that end on it, read as
/// libyaml reads them: no quoted scalar or flow collection still open at its end, and none of
/// the indicators that make YAML read more than the text (at the start of a token: `&` anchor,
/// `*` alias, `!` tag, `|` `>` block scalar, `?` complex key, `%` directive, `@` and `` ` ``
/// reserved). A plain scalar ends where libyaml ends one (`: `, ` #`, and in a flow collection
/// `,[]{}`), a quote opens only where a token starts; anything this does not know for sure
/// (`:` at a token's start, a quote right after another token, `- ` inside brackets) is
/// refused. Over-cautious on purpose: a false alarm only costs the single parse.
fn simple_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    let blank_at = |i: usize| bytes.get(i).is_none_or(|&b| b == b' ');
    let mut depth = 0usize;
    let mut i = 0;
    // Between tokens here; each arm leaves `i` after the token it read.
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            b'#' if i == 0 || bytes[i - 1] == b' ' => return depth == 0,
            b'"' | b'\'' => {
                let Some(end) = quoted_end(bytes, i) else {
                    return false; // open at the line's end: it spans lines
                };
                i = end;
                // After a quoted scalar: a space, the line's end, `:`, or a flow indicator.
                if !matches!(bytes.get(i), None | Some(b' ' | b':' | b',' | b']' | b'}')) {
                    return false;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                let Some(d) = depth.checked_sub(1) else {
                    return false;
                };
                depth = d;
                i += 1;
            }
            b',' if depth > 0 => i += 1,
            b'-' if blank_at(i + 1) => {
                if depth > 0 {
                    return false;
                }
                i += 1;
            }
            b':' if blank_at(i + 1) || (depth > 0 && flow_indicator(bytes[i + 1])) => i += 1,
            b'&' | b'*' | b'!' | b'|' | b'>' | b'?' | b'%' | b'@' | b'`' | b':' | b',' | b'#' => {
                return false;
            }
            _ => i = plain_end(bytes, i, depth > 0),
        }
    }
    depth == 0
}

/// `,[]{}`: they end a plain scalar inside a flow collection.
fn flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

/// Where the quoted scalar opening at `start` ends (after its closing quote), or `None` when
/// it does not close on this line. Double quotes escape with `\`, single quotes with `''`.
fn quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Where the plain scalar starting at `start` ends: at `: ` (or `:` at the line's end), at
/// ` #`, at the line's end, and inside a flow collection at `,[]{}` or a `:` before one.
fn plain_end(bytes: &[u8], start: usize, flow: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        let next_blank = bytes.get(i + 1).is_none_or(|&n| n == b' ');
        if (b == b':' && (next_blank || (flow && flow_indicator(bytes[i + 1]))))
            || (b == b'#' && bytes[i - 1] == b' ')
            || (flow && flow_indicator(b))
        {
            return i;
        }
        i += 1;
    }
    i
}

/// Whether reading `text` in 2, 3 and 7 pieces (7 on 2 threads: each takes several, one after
/// the other) gives exactly what the single direct read gives, whenever the text is cut at
/// all: `Err` says how they differ. For the tests and the `config` fuzz target.
pub(super) fn agrees_with_single(text: &str) -> Result<(), String> {
    for (threads, pieces) in [(2, 2), (3, 3), (2, 7)] {
        let Some(split) = read_in(text, threads, pieces) else {
            continue;
        };
        let split = format!("{split:#?}");
        match direct::read(text) {
            None => return Err(format!("read in {pieces} pieces as {split}, refused whole")),
            Some(whole) => {
                let whole = format!("{whole:#?}");
                if whole != split {
                    return Err(format!(
                        "read in {pieces} pieces as {split}, whole as {whole}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "listen: \"127.0.0.1:4567\"\npublic_url: \"http://127.0.0.1:4567\"\nupstream: { url: \"http://127.0.0.1:5000\" }\ntoken: { signing_key: token.key, certificate: token.crt }\n";

    /// A directory in bench/directory.py's shape: `n` users, groups and projects, with tokens.
    fn directory(n: usize) -> String {
        let mut text = String::from(HEAD);
        text.push_str("users:\n");
        for u in 0..n {
            text.push_str(&format!("  - username: user{u}\n"));
            if u % 3 == 0 {
                text.push_str("    password_hash: \"$2b$10$TxrJdWOkrFuHvafsrCKFHulZUay78DBAvX857HaeDQG4SJaWOsPpC\"\n");
            }
            text.push_str(&format!("    personal_access_tokens:\n      - {{ name: t{u}, token_sha256: \"{u:064x}\", scopes: [read_registry] }}\n"));
        }
        text.push_str("groups:\n");
        for g in 0..n {
            text.push_str(&format!(
                "  - {{ path: group{g}, visibility: private, members: {{ user{g}: reporter }} }}\n"
            ));
        }
        text.push_str("projects:\n");
        for p in 0..n {
            text.push_str(&format!("  - path: group{}/project{p}\n    visibility: private\n    members: {{ user{p}: developer, 'user{}': maintainer }}\n    deploy_tokens:\n      - {{ username: gitlab+deploy-token-{p}, token_sha256: \"{:064x}\", scopes: [read_registry] }}\n", p % n.max(1), (p + 1) % n.max(1), p + (1 << 40)));
        }
        text
    }

    /// `text` is cut, each way the pieces read what the whole read reads.
    fn cut_and_agrees(text: &str) {
        assert!(direct::read(text).is_some(), "not read whole:\n{text}");
        for pieces in [2, 3, 4, 9] {
            assert!(
                read_in(text, 2, pieces).is_some(),
                "not cut in {pieces}:\n{text}"
            );
        }
        agrees_with_single(text).unwrap();
    }

    /// `text` is not cut (the whole read reads it, or refuses it, as before).
    fn not_cut(text: &str) {
        assert!(
            read_in(text, 2, 2).is_none(),
            "cut in 2:\n{}",
            &text[text.len().saturating_sub(300)..]
        );
        assert!(
            read_in(text, 2, 3).is_none() && read_in(text, 2, 9).is_none(),
            "cut in 3:\n{text}"
        );
        agrees_with_single(text).unwrap();
    }

    /// The 50th project (in the second half of 100) with `item` instead of its usual text.
    fn with_project(item: &str) -> String {
        let text = directory(100);
        let at = text.find("  - path: group49/project49\n").unwrap();
        let end = at + text[at..].find("  - path: group50/").unwrap();
        format!("{}{item}{}", &text[..at], &text[end..])
    }

    #[test]
    fn a_directory_cut_in_pieces_reads_as_the_whole() {
        cut_and_agrees(&directory(10));
        cut_and_agrees(&directory(300));
        let text = directory(300);
        let file = read_in(&text, 2, 2).unwrap();
        assert_eq!(file.users.len(), 300);
        // Many pieces on two threads: every item once, in the file's order.
        let many = read_in(&text, 2, 40).unwrap();
        assert_eq!(
            many.projects.iter().map(|p| &p.path).collect::<Vec<_>>(),
            file.projects.iter().map(|p| &p.path).collect::<Vec<_>>()
        );
        assert_eq!(many.users.len(), 300);
        assert_eq!(file.projects[299].path, "group299/project299");
        // A piece each: the cut lands on an item, not in the middle of one.
        let plan = plan(&text, 2).unwrap();
        assert_eq!(plan.pieces.len(), 1);
        for &(key, start, _) in &plan.pieces[0] {
            assert!(LISTS.contains(&key));
            assert!(
                text[start..].starts_with("  - "),
                "{}",
                &text[start..start + 20]
            );
        }
    }

    #[test]
    fn a_large_file_is_cut_when_loaded_and_validates_as_the_whole() {
        let text = directory(4000);
        assert!(text.len() >= MIN_BYTES, "{}", text.len());
        assert!(read(&text).is_some());
        agrees_with_single(&text).unwrap();
        let path = std::path::Path::new("/etc/gateway.yaml");
        let config = super::super::Config::from_yaml(&text, path, &|_| None)
            .map_err(|e| e.problems().into_iter().take(3).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(config.directory.projects().len(), 4000);
        assert_eq!(config.directory.users().count(), 4000);
        // Small files are read in one piece.
        assert!(read(&directory(10)).is_none());
    }

    #[test]
    fn the_repositorys_files_read_the_same_cut_or_whole() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("gateway.yaml")];
        for dir in ["examples", "examples/kubernetes", "tests/fixtures", "bench"] {
            for entry in std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(path);
                }
            }
        }
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            agrees_with_single(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }

    #[test]
    fn items_over_several_lines_comments_and_blank_lines_between_them() {
        // A multi-line plain scalar, comments at every indentation, blank lines, a list item
        // that is a block mapping holding a list at the list's own indentation plus two.
        cut_and_agrees(&with_project(
            "  - path: group49/project49\n    visibility: private\n    members:\n      alice: developer\n\n# a comment at column 0\n      bob: reporter\n    # a comment\n    deploy_tokens:\n    - username: gitlab+deploy-token-x\n      token_sha256: \"ab\"\n      scopes:\n      - read_registry\n",
        ));
        cut_and_agrees(&with_project(
            "  - path: group49/\n      project49\n  # between items\n\n",
        ));
        cut_and_agrees(&with_project(
            "  - { path: 'group49/it''s', members: { \"a\\\"b\": developer } } # done\n",
        ));
        // Quoted text holding what would be indicators outside quotes.
        cut_and_agrees(&with_project(
            "  - path: \"a&b*c!d|e>f?g%h@i`j #k [l {m\"\n",
        ));
    }

    #[test]
    fn empty_and_short_lists_are_not_cut_but_the_rest_is() {
        not_cut(&format!("{HEAD}users: []\nprojects:\n"));
        not_cut(&format!("{HEAD}users:\n  - username: a\nprojects: []\n"));
        not_cut(&format!("{HEAD}users:\n# nothing\n"));
        cut_and_agrees(&format!(
            "{HEAD}users: []\ngroups:\nprojects:\n  - path: a\n  - path: b\n"
        ));
        // No newline at the end.
        cut_and_agrees(&format!("{HEAD}projects:\n  - path: a\n  - path: b"));
    }

    #[test]
    fn every_doubt_reads_the_whole_text() {
        for trap in [
            // Anchors, aliases, tags, merge keys.
            "  - &p { path: a }\n",
            "  - path: a\n    members: *m\n",
            "  - !p { path: a }\n",
            "  - path: !!str a\n",
            "  - { <<: {path: a} }\n",
            // Environment variables.
            "  - path: \"${P}\"\n",
            // Block scalars, complex keys, directives, reserved indicators.
            "  - path: |\n      a\n",
            "  - path: >-\n      a\n",
            "  - ? path\n    : a\n",
            "  - path: @a\n",
            "  - path: `a\n",
            // A quoted scalar or a flow collection spanning lines, which could cross a cut.
            "  - path: \"group49/\n  - path: x\"\n",
            "  - path: 'group49/\n    project49'\n",
            "  - { path: group49/project49,\n  - path: x }\n",
            "  - members: [\n  - a ]\n",
            "  - { k: a \"b, l: [x, m: \"z }\n",
            "  - path: \"a\"b\n",
            // Tabs, CR, BOM, the line breaks only libyaml knows.
            "  - path:\ta\n",
            "  - path: a\r\n",
            "  - path: \u{feff}a\n",
            "  - path: a\u{2028}b\n",
            "  - path: a\u{85}b\n",
            // A line at the list's indentation that starts no item; less indented; bare `-`.
            "  path: a\n",
            " - path: a\n",
            "  -\n    path: a\n",
            "  - # a comment\n    path: a\n",
        ] {
            not_cut(&with_project(trap));
        }
        let text = directory(100);
        for trap in [
            // Document markers, a second document.
            format!("---\n{text}"),
            format!("{text}...\n"),
            format!("{text}---\nlisten: x\n"),
            // A top-level key given twice; a top-level key that is not plain.
            format!("{text}users:\n  - username: z\n"),
            format!("{text}\"log\": {{ level: debug }}\n"),
            format!("{text}? log\n: {{ level: debug }}\n"),
            format!("%YAML 1.1\n---\n{text}"),
            // A top-level sequence item, an indented line before the first key.
            format!("{text}- x\n"),
            format!("  # c\n  a: b\n{text}"),
            // The list at column 0.
            text.replace("\n  - path: group", "\n- path: group"),
        ] {
            not_cut(&trap);
        }
    }

    #[test]
    fn an_error_in_a_later_piece_reads_the_whole_text_again() {
        // Cut, but a piece fails: the whole read runs and reports as it always did.
        for trap in [
            "  - path: group49/project49\n    visiblity: private\n",
            "  - path: group49/project49\n    members: { a: developer, a: owner }\n",
            "  - path: 49\n",
            "  - path: a\n    path: b\n",
            "  - path: a: b\n",
            "  - path: a\n      b: c\n",
            "  - [a, b]\n",
            "  - path: \"\\q\"\n",
        ] {
            let text = with_project(trap);
            assert!(plan(&text, 2).is_some(), "not planned:\n{trap}");
            assert!(read_in(&text, 2, 2).is_none(), "read:\n{trap}");
            assert!(read_in(&text, 2, 9).is_none(), "read in 9:\n{trap}");
            assert!(direct::read(&text).is_none(), "read whole:\n{trap}");
            agrees_with_single(&text).unwrap();
            let path = std::path::Path::new("/etc/gateway.yaml");
            let error = super::super::Config::from_yaml(&text, path, &|_| None).unwrap_err();
            // The whole read's own words: the key, or the line of the trap for YAML's errors.
            let line = text[..text.find(trap).unwrap()].matches('\n').count() + 1;
            let error = error.to_string();
            assert!(
                error.contains("projects[49]")
                    || [line, line + 1]
                        .iter()
                        .any(|l| error.contains(&format!("line {l} "))),
                "{trap}: {error}"
            );
        }
    }

    #[test]
    fn simple_lines() {
        for line in [
            "",
            "  # comment 'open",
            "key: value # 'open",
            "  - { url: \"http://127.0.0.1:5000\", a: [b, 'c''d'] }",
            "  - path: a#b'c",
            "  - path: it's",
            "  - path: -a",
            "token_sha256: \"ab\\\"cd\"",
            "{ a: b }: c",
            "  - a]",
            "  - a, b",
        ] {
            assert!(simple_line(line), "{line:?}");
        }
        for line in [
            "  - path: 'open",
            "  - path: \"open\\\"",
            "  - [a, b",
            "  - { a: [b }",
            "  - &a b",
            "  - path: *a",
            "  - path: |",
            "  - ? a",
            "  - path: \"a\"b",
            "  - { -a: b, - c }",
            "  - :a",
            "  - ,a",
            "  - \"a\"# c",
        ] {
            assert!(!simple_line(line), "{line:?}");
        }
    }
}

/// How the pieces share the work, for BENCHMARKS.md: `PORTCULLIS_SPLIT_FILE=gateway.yaml cargo
/// test --profile perf --lib split_cpu -- --ignored --nocapture` prints each thread's CPU time
/// for the single read and the read in pieces (on a busy machine the wall time says nothing,
/// but the longest thread's CPU time is what the read would take on idle cores).
#[cfg(all(test, target_os = "linux"))]
mod cpu {
    use super::*;

    #[repr(C)]
    struct Rusage {
        utime: [i64; 2],
        stime: [i64; 2],
        rest: [i64; 14],
    }

    extern "C" {
        fn getrusage(who: i32, usage: *mut Rusage) -> i32;
    }

    /// This thread's CPU time so far, in ms.
    fn thread_cpu_ms() -> f64 {
        let mut usage = Rusage {
            utime: [0; 2],
            stime: [0; 2],
            rest: [0; 14],
        };
        // SAFETY: RUSAGE_THREAD (1) fills the struct, which is at least `struct rusage`'s size.
        unsafe { getrusage(1, &mut usage) };
        let ms = |t: [i64; 2]| t[0] as f64 * 1000.0 + t[1] as f64 / 1000.0;
        ms(usage.utime) + ms(usage.stime)
    }

    #[test]
    #[ignore]
    fn split_cpu() {
        let Ok(path) = std::env::var("PORTCULLIS_SPLIT_FILE") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let t0 = thread_cpu_ms();
        let whole = direct::read(&text).unwrap();
        println!("single read: {:.0} ms CPU", thread_cpu_ms() - t0);
        drop(whole);
        let t0 = thread_cpu_ms();
        let plan = plan(&text, 2).unwrap();
        println!("plan: {:.0} ms CPU", thread_cpu_ms() - t0);
        drop(plan);
        for pieces in [2, text.len() / PIECE_BYTES] {
            let t0 = thread_cpu_ms();
            let file = read_in(&text, 2, pieces).unwrap();
            println!(
                "read_in, 2 threads, {pieces} pieces, this thread: {:.0} ms CPU",
                thread_cpu_ms() - t0,
            );
            drop(file);
        }
        let t0 = thread_cpu_ms();
        let file = read(&text).unwrap();
        println!(
            "read, this thread: {:.0} ms CPU ({} projects)",
            thread_cpu_ms() - t0,
            file.projects.len()
        );
    }
}
