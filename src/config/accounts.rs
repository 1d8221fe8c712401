//! The account the signer runs as: OpenDKIM's `UserID user[:group]` (or
//! the native `user`/`group`), looked up the way OpenDKIM looks it up (a
//! name, or failing that a number) so that a typo stops start-up with the
//! line that has it, and so that key files are checked against the user
//! that will read them. This module only reads the user database.

use nix::unistd::{Gid, Group, Uid, User};

use crate::diagnostics::Location;

use super::{ConfigError, RunAs};

/// A run-as account that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub run_as: RunAs,
    pub uid: u32,
}

/// Looks up `user` and optional `group` (names, or numbers when no such
/// name exists), both written at `at`. Reports each one that is missing.
pub(crate) fn resolve(
    user: &str,
    group: Option<&str>,
    at: &Location,
) -> Result<Account, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let found_user = User::from_name(user).ok().flatten().or_else(|| {
        user.parse::<u32>()
            .ok()
            .and_then(|uid| User::from_uid(Uid::from_raw(uid)).ok().flatten())
    });
    if found_user.is_none() {
        errors.push(ConfigError::UnknownUser {
            at: at.clone(),
            user: user.to_string(),
        });
    }
    if let Some(group) = group
        && let Err(e) = check_group(group, at)
    {
        errors.push(e);
    }
    match found_user {
        Some(found) if errors.is_empty() => Ok(Account {
            run_as: RunAs {
                user: user.to_string(),
                group: group.map(str::to_string),
            },
            uid: found.uid.as_raw(),
        }),
        _ => Err(errors),
    }
}

/// Reports a user that does not exist (for a socket owner).
pub(crate) fn check_user(user: &str, at: &Location) -> Result<(), ConfigError> {
    let exists = User::from_name(user).ok().flatten().is_some()
        || user
            .parse::<u32>()
            .is_ok_and(|uid| User::from_uid(Uid::from_raw(uid)).ok().flatten().is_some());
    if exists {
        Ok(())
    } else {
        Err(ConfigError::UnknownUser {
            at: at.clone(),
            user: user.to_string(),
        })
    }
}

/// Reports a group that does not exist (for a socket group).
pub(crate) fn check_group(group: &str, at: &Location) -> Result<(), ConfigError> {
    let exists = Group::from_name(group).ok().flatten().is_some()
        || group
            .parse::<u32>()
            .is_ok_and(|gid| Group::from_gid(Gid::from_raw(gid)).ok().flatten().is_some());
    if exists {
        Ok(())
    } else {
        Err(ConfigError::UnknownGroup {
            at: at.clone(),
            group: group.to_string(),
        })
    }
}

/// Splits OpenDKIM's `user[:group]`.
pub(crate) fn split_user_group(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (value, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location::new("/etc/opendkim.conf", 5)
    }

    #[test]
    fn existing_user_gives_its_uid() {
        let account = resolve("root", Some("root"), &at()).unwrap();
        assert_eq!(account.uid, 0);
        assert_eq!(account.run_as.group.as_deref(), Some("root"));
        assert_eq!(resolve("0", None, &at()).unwrap().uid, 0);
    }

    #[test]
    fn unknown_user_and_group_are_both_reported_with_the_line() {
        let errors = resolve("no-such-dkim-user", Some("no-such-dkim-group"), &at()).unwrap_err();
        assert_eq!(errors.len(), 2);
        let text = errors[0].to_string();
        assert!(
            text.starts_with("/etc/opendkim.conf:5: user `no-such-dkim-user` does not exist"),
            "{text}"
        );
        assert!(errors[1].to_string().contains("group `no-such-dkim-group`"));
    }

    #[test]
    fn user_group_is_split_at_the_colon() {
        assert_eq!(split_user_group("opendkim"), ("opendkim", None));
        assert_eq!(
            split_user_group("opendkim:mail"),
            ("opendkim", Some("mail"))
        );
    }
}
