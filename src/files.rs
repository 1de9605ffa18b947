//! Files the command line writes for the server to read: the users file,
//! DKIM keys, the compiled-plugin cache's folder. Operators run these commands with
//! `sudo` while the service runs as its own user; a file root creates in the
//! service's folder would be unreadable to it (keys and users are 0600), so
//! it is handed to the owner of the folder it is in.

use std::io;
use std::path::Path;

/// When running as root, gives `path` to the owner and group of the folder
/// it is in, unless root owns that folder too. Does nothing otherwise.
pub fn inherit_owner(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder = std::fs::metadata(parent)?;
    if folder.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(folder.uid()), Some(folder.gid()))
}

/// Creates `dir` and any missing parents with `mode`, each handed over as
/// by [`inherit_owner`].
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => inherit_owner(dir),
        // Made meanwhile by someone else: theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn root_hands_what_it_creates_to_the_folders_owner() {
        // SAFETY: as above.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: nothing to hand over, nothing to test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let service = dir.path().join("service");
        std::fs::create_dir(&service).unwrap();
        std::os::unix::fs::chown(&service, Some(65534), Some(65533)).unwrap();
        let file = service.join("users");
        std::fs::write(&file, "x").unwrap();
        inherit_owner(&file).unwrap();
        let m = std::fs::metadata(&file).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65533));
        // In a folder of root's, a file stays root's.
        let own = dir.path().join("mine");
        std::fs::write(&own, "x").unwrap();
        inherit_owner(&own).unwrap();
        assert_eq!(std::fs::metadata(&own).unwrap().uid(), 0);
        // Folders made on the way each get the owner of the one above.
        let deep = service.join("dkim/example.org");
        create_dir_all(&deep, 0o700).unwrap();
        for d in [service.join("dkim"), deep] {
            let m = std::fs::metadata(&d).unwrap();
            assert_eq!((m.uid(), m.mode() & 0o777), (65534, 0o700), "{}", d.display());
        }
    }
}
