//! nats-secure/permissions.conf read as data: each role's publish and subscribe allow
//! lists and its `allow_responses`, for tests that give the same roles another way
//! (user JWTs in operator mode). The parser knows this file's regular format only:
//! `NAME = {` at the start of a line, closed by `}` at the start of a line; inside,
//! `publish: {` / `subscribe: {` each with `allow: [` and one quoted entry a line,
//! `allow_responses: { max: N, expires: "D" }` on one line, `#` comments. Anything
//! else fails the test, naming the line, so a change of format is noticed.

use std::time::Duration;

/// One role: its allow lists as written (a subscribe entry may carry a queue group:
/// `"natsfn.invoke.> natsfn.*"` is subject and queue) and its `allow_responses`.
#[derive(Debug, Clone, PartialEq)]
pub struct RolePermissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub responses: Option<Responses>,
}

/// `allow_responses: { max: N, expires: "D" }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Responses {
    pub max: i64,
    pub expires: Duration,
}

/// The role `name` (`NODE`, `ADMIN`, `INVOKER`) of the shipped permissions.conf (or of
/// the copy in `NATSFN_SECURE_DIR`).
pub fn shipped_role(name: &str) -> RolePermissions {
    let path = super::secure_dir().join("permissions.conf");
    let conf =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    role(&conf, name)
}

/// The role `name` of a permissions.conf in the shipped format.
pub fn role(conf: &str, name: &str) -> RolePermissions {
    let opening = format!("{name} = {{");
    let mut lines = conf.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, line)| uncomment(line).trim_end() == opening)
        .unwrap_or_else(|| panic!("permissions.conf: no line `{opening}`"));
    let mut role = RolePermissions {
        publish: Vec::new(),
        subscribe: Vec::new(),
        responses: None,
    };
    let mut list: Option<&mut Vec<String>> = None;
    for (number, raw) in lines {
        let line = uncomment(raw);
        if line.trim_end() == "}" && !line.starts_with(' ') {
            return role;
        }
        let line = line.trim();
        match line {
            "" | "allow: [" | "]" | "}" => {}
            "publish: {" => list = Some(&mut role.publish),
            "subscribe: {" => list = Some(&mut role.subscribe),
            _ if line.starts_with("allow_responses:") => {
                role.responses = Some(responses(line, number + 1));
            }
            _ if line.len() >= 2 && line.starts_with('"') && line.ends_with('"') => {
                let entry = &line[1..line.len() - 1];
                assert!(
                    !entry.contains('"'),
                    "permissions.conf line {}: one entry a line: {raw}",
                    number + 1
                );
                list.as_deref_mut()
                    .unwrap_or_else(|| {
                        panic!("permissions.conf line {}: outside a list", number + 1)
                    })
                    .push(entry.to_owned());
            }
            _ => panic!(
                "permissions.conf line {}: not in the format this parser reads: {raw}",
                number + 1
            ),
        }
    }
    panic!("permissions.conf: `{opening}` is never closed")
}

/// The line without its comment (no entry of the file holds a `#`).
fn uncomment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(before, _)| before)
}

/// `allow_responses: { max: 1, expires: "16m" }`.
fn responses(line: &str, number: usize) -> Responses {
    read_responses(line)
        .unwrap_or_else(|| panic!("permissions.conf line {number}: allow_responses: {line}"))
}

fn read_responses(line: &str) -> Option<Responses> {
    let inner = line
        .strip_prefix("allow_responses:")?
        .trim()
        .strip_prefix('{')?
        .strip_suffix('}')?;
    let (mut max, mut expires) = (None, None);
    for field in inner.split(',') {
        let (key, value) = field.split_once(':')?;
        match key.trim() {
            "max" => max = Some(value.trim().parse().ok()?),
            "expires" => expires = Some(go_duration(value.trim().trim_matches('"'))),
            _ => return None,
        }
    }
    Some(Responses {
        max: max?,
        expires: expires?,
    })
}

/// A duration as nats-server's config writes one: a number and `ms`, `s`, `m` or `h`.
pub fn go_duration(text: &str) -> Duration {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let count: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("permissions.conf: a duration: {text}"));
    match &text[digits.len()..] {
        "ms" => Duration::from_millis(count),
        "s" => Duration::from_secs(count),
        "m" => Duration::from_secs(count * 60),
        "h" => Duration::from_secs(count * 3600),
        unit => panic!("permissions.conf: a duration's unit: {unit:?} in {text}"),
    }
}
