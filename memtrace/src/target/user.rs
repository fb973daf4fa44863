//! Whose the spawned command is. `sudo memtrace run -- CMD` runs CMD as the
//! user who typed it, as `sudo -u` would (the files it creates are theirs,
//! its `~` is theirs); memtrace itself stays root to trace it. `--as-root`
//! keeps the command root.
use std::{ffi::CString, path::PathBuf};

use anyhow::{Context, Result};

/// A user to run the command as, looked up before the fork (the child may
/// only call async-signal-safe functions: no NSS lookups there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as the login would have them.
    pub groups: Vec<libc::gid_t>,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl User {
    /// The user who ran `sudo memtrace` (SUDO_UID/SUDO_GID), when memtrace
    /// runs as root through sudo and that user is not root itself.
    pub fn invoking() -> Result<Option<User>> {
        match crate::trace::invoking_user() {
            Some((uid, gid)) if uid != 0 => User::lookup(uid, gid).map(Some),
            _ => Ok(None),
        }
    }

    /// `uid`'s name, home, shell and groups from the user database; a uid
    /// it does not know (a container's, a deleted user's) runs with `gid`
    /// as its only group, in `/`.
    pub fn lookup(uid: u32, gid: u32) -> Result<User> {
        let Some((name, home, shell)) = passwd_entry(uid) else {
            return Ok(User {
                uid,
                gid,
                groups: vec![gid],
                name: uid.to_string(),
                home: "/".into(),
                shell: "/bin/sh".into(),
            });
        };
        let groups = group_list(&name, gid).with_context(|| format!("reading the groups of user {name}"))?;
        Ok(User { uid, gid, groups, name, home, shell })
    }

    /// The variables `sudo -u` sets for the user: HOME, USER, LOGNAME, SHELL.
    pub fn environment(&self) -> Vec<(String, String)> {
        vec![
            ("HOME".into(), self.home.display().to_string()),
            ("USER".into(), self.name.clone()),
            ("LOGNAME".into(), self.name.clone()),
            ("SHELL".into(), self.shell.display().to_string()),
        ]
    }
}

/// (name, home, shell) of `uid` from getpwuid_r.
fn passwd_entry(uid: u32) -> Option<(String, PathBuf, PathBuf)> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data that getpwuid_r fills, pointing into buf.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffer and its length match; found is null or &entry.
    let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success the fields are NUL-terminated strings in buf.
    let text = |p: *const libc::c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned();
    Some((text(entry.pw_name), PathBuf::from(text(entry.pw_dir)), PathBuf::from(text(entry.pw_shell))))
}

/// `name`'s groups with `gid` among them (getgrouplist).
fn group_list(name: &str, gid: u32) -> Result<Vec<libc::gid_t>> {
    let c_name = CString::new(name)?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; getgrouplist writes at most n
        // and sets n to the count it needs.
        let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return Ok(groups);
        }
        if n as usize <= groups.len() {
            anyhow::bail!("getgrouplist failed");
        }
        groups.resize(n as usize, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_user_has_its_name_home_and_groups() {
        // Debian's nobody: uid and gid 65534, home /nonexistent.
        let nobody = User::lookup(65534, 65534).unwrap();
        assert_eq!(nobody.name, "nobody");
        assert_eq!(nobody.home, PathBuf::from("/nonexistent"));
        assert!(nobody.groups.contains(&65534), "{:?}", nobody.groups);
        let env = nobody.environment();
        assert!(env.contains(&("USER".into(), "nobody".into())), "{env:?}");
    }

    #[test]
    fn an_unknown_uid_runs_with_its_gid_only() {
        let ghost = User::lookup(3_999_999, 3_999_998).unwrap();
        assert_eq!((ghost.name.as_str(), ghost.groups.as_slice()), ("3999999", &[3_999_998][..]));
        assert_eq!(ghost.home, PathBuf::from("/"));
    }
}
