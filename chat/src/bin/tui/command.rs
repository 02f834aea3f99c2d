//! Slash commands: what a line starting with `/` asks for.

use xirtam_proofs::Name;

/// A command typed in the composer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Open the conversation with a user, and send `text` if given.
    Msg(Name, Option<String>),
    /// Accept a user (default: the open conversation's) as a contact.
    Accept(Option<Name>),
    /// Show a user's verified record and key fingerprint.
    Whois(Name),
    /// Move this account to another server.
    Move(Name),
    /// Claim a name on a server (a new identity).
    Register(Name, Name),
    /// Our devices.
    Devices,
    /// Approve a new device showing this link code.
    Approve(String),
    /// Remove a device (its key in hex).
    RemoveDevice(String),
    /// Envelopes refused.
    Rejected,
    /// Create a group, on a server if given.
    GroupCreate(String, Option<Name>),
    /// Accept the invitation of the open group request (or the group
    /// named).
    Join(Option<String>),
    /// Group changes, on the open group.
    Invite(Name),
    /// Remove a member (`ban`: for good).
    Kick(Name, bool),
    /// Make a member an admin, or not.
    Admin(Name, bool),
    /// Rename the open group.
    Rename(String),
    /// Only admins post (on|off).
    AdminsOnly(bool),
    /// New members read the current key's messages (on|off).
    History(bool),
    /// Rotate the open group's key.
    Rotate,
    /// Leave the open group.
    Leave,
    /// Move the open group to another server.
    GroupMove(Name),
    /// The open group's members and state.
    Members,
    /// Help.
    Help,
    /// Quit.
    Quit,
}

/// Every command, for the help screen: usage and what it does.
pub(crate) const HELP: &[(&str, &str)] = &[
    (
        "/msg @user [text]",
        "open the conversation with @user (and send text)",
    ),
    ("/accept [@user]", "accept a request: answer a stranger"),
    ("/whois @user", "verified record and key fingerprint"),
    ("/devices", "this name's devices"),
    ("/approve CODE", "approve a new device showing CODE"),
    ("/remove-device KEY", "remove a device (needs the root key)"),
    ("/move ~server", "move your account to another server"),
    (
        "/register @name ~server",
        "claim a name (a new identity only)",
    ),
    ("/rejected", "envelopes refused, and why"),
    ("/group create NAME [~server]", "create a group"),
    ("/join [group]", "accept the open (or named) invitation"),
    ("/invite @user", "add @user to the open group"),
    ("/kick @user, /ban @user", "remove a member (ban: for good)"),
    ("/admin @user [off]", "make a member an admin (or not)"),
    ("/rename NAME", "rename the open group"),
    ("/set admins-only on|off", "only admins post"),
    ("/set history on|off", "new members read recent messages"),
    ("/rotate", "rotate the open group's key"),
    (
        "/group move ~server",
        "move the open group to another server",
    ),
    ("/members", "the open group's members and state"),
    ("/leave", "leave the open group"),
    ("/help, ?", "this screen"),
    ("/quit, Ctrl-C", "quit"),
];

fn name(s: &str, kind: &str) -> Result<Name, String> {
    let n = Name::new(s).map_err(|e| format!("{s:?} is not a valid name: {e}"))?;
    let ok = match kind {
        "@" => s.starts_with('@'),
        _ => s.starts_with('~'),
    };
    if !ok {
        let what = if kind == "@" {
            "a user (@name)"
        } else {
            "a server (~name)"
        };
        return Err(format!("{s:?}: expected {what}"));
    }
    Ok(n)
}

fn on_off(s: Option<&str>) -> Result<bool, String> {
    match s {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn one<'a>(args: &[&'a str], usage: &str) -> Result<&'a str, String> {
    match args {
        [a] => Ok(a),
        _ => Err(format!("usage: {usage}")),
    }
}

/// Parse a command line (starting with `/`).
pub(crate) fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let body = line.strip_prefix('/').unwrap_or(line);
    let (word, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    let rest = rest.trim();
    let args: Vec<&str> = rest.split_whitespace().collect();
    Ok(match word {
        "msg" | "m" | "query" => {
            let Some(to) = args.first() else {
                return Err("usage: /msg @user [text]".into());
            };
            let text = rest[to.len()..].trim();
            Command::Msg(name(to, "@")?, (!text.is_empty()).then(|| text.to_owned()))
        }
        "accept" => match args.as_slice() {
            [] => Command::Accept(None),
            [u] => Command::Accept(Some(name(u, "@")?)),
            _ => return Err("usage: /accept [@user]".into()),
        },
        "whois" => Command::Whois(name(one(&args, "/whois @user")?, "@")?),
        "move" => Command::Move(name(one(&args, "/move ~server")?, "~")?),
        "register" => match args.as_slice() {
            [n, s] => Command::Register(name(n, "@")?, name(s, "~")?),
            _ => return Err("usage: /register @name ~server".into()),
        },
        "devices" => Command::Devices,
        "approve" => Command::Approve(one(&args, "/approve CODE")?.to_owned()),
        "remove-device" => Command::RemoveDevice(one(&args, "/remove-device KEY")?.to_owned()),
        "rejected" => Command::Rejected,
        "group" => match args.as_slice() {
            ["create", ..] => {
                let mut words: Vec<&str> = args[1..].to_vec();
                let server = match words.last() {
                    Some(s) if s.starts_with('~') && words.len() > 1 => {
                        let s = name(s, "~")?;
                        words.pop();
                        Some(s)
                    }
                    _ => None,
                };
                if words.is_empty() {
                    return Err("usage: /group create NAME [~server]".into());
                }
                Command::GroupCreate(words.join(" "), server)
            }
            ["move", s] => Command::GroupMove(name(s, "~")?),
            ["join", rest @ ..] => Command::Join((!rest.is_empty()).then(|| rest.join(" "))),
            _ => return Err("usage: /group create NAME [~server], /group move ~server".into()),
        },
        "join" => Command::Join((!rest.is_empty()).then(|| rest.to_owned())),
        "invite" => Command::Invite(name(one(&args, "/invite @user")?, "@")?),
        "kick" => Command::Kick(name(one(&args, "/kick @user")?, "@")?, false),
        "ban" => Command::Kick(name(one(&args, "/ban @user")?, "@")?, true),
        "admin" => match args.as_slice() {
            [u] => Command::Admin(name(u, "@")?, true),
            [u, v] => Command::Admin(name(u, "@")?, on_off(Some(v))?),
            _ => return Err("usage: /admin @user [on|off]".into()),
        },
        "rename" if !rest.is_empty() => Command::Rename(rest.to_owned()),
        "rename" => return Err("usage: /rename NAME".into()),
        "set" => match args.as_slice() {
            ["admins-only", v] => Command::AdminsOnly(on_off(Some(v))?),
            ["history", v] => Command::History(on_off(Some(v))?),
            _ => return Err("usage: /set admins-only on|off, /set history on|off".into()),
        },
        "rotate" => Command::Rotate,
        "leave" => Command::Leave,
        "members" => Command::Members,
        "help" | "h" | "?" => Command::Help,
        "quit" | "q" | "exit" => Command::Quit,
        other => return Err(format!("unknown command /{other}: /help lists them")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse("/msg @bob"), Ok(Command::Msg(n("@bob"), None)));
        assert_eq!(
            parse("/msg @bob  hello  there "),
            Ok(Command::Msg(n("@bob"), Some("hello  there".into())))
        );
        assert_eq!(
            parse("/group create book club ~s2"),
            Ok(Command::GroupCreate("book club".into(), Some(n("~s2"))))
        );
        assert_eq!(
            parse("/group create ~weird"),
            Ok(Command::GroupCreate("~weird".into(), None))
        );
        assert_eq!(parse("/move ~s2"), Ok(Command::Move(n("~s2"))));
        assert_eq!(parse("/group move ~s2"), Ok(Command::GroupMove(n("~s2"))));
        assert_eq!(parse("/ban @eve"), Ok(Command::Kick(n("@eve"), true)));
        assert_eq!(
            parse("/admin @eve off"),
            Ok(Command::Admin(n("@eve"), false))
        );
        assert_eq!(parse("/set history off"), Ok(Command::History(false)));
        assert_eq!(parse("/join"), Ok(Command::Join(None)));
    }

    #[test]
    fn mistakes_say_what_is_expected() {
        assert!(parse("/msg ~s1").unwrap_err().contains("expected a user"));
        assert!(
            parse("/move @bob")
                .unwrap_err()
                .contains("expected a server")
        );
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(parse("/whois").unwrap_err().contains("usage"));
        assert!(
            parse("/set history maybe")
                .unwrap_err()
                .contains("on or off")
        );
    }
}
