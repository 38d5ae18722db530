//! Writes into an app's folder that cannot be sent elsewhere: every change goes through a
//! handle on its folder, opened component by component from the app root without following a
//! symlink (`openat` with `O_NOFOLLOW`), at the moment of use. A folder swapped for a symlink
//! between the plan and the write, or between two writes of one apply, makes that write fail;
//! it never lands outside the root. Temp files are created `O_EXCL|O_NOFOLLOW` in that handle.
//!
//! It also knows which folders the mapper created ([`AppTree::created`]), so removing a link
//! removes only those of its parents that the mapper made and that are empty.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// Folder handles: opened for lookups and `*at` calls only.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// An app root, opened once per apply, with the folders the mapper made below it.
pub struct AppTree {
    root: PathBuf,
    root_fd: Option<OwnedFd>,
    /// Folders (absolute paths) the mapper created: the only ones it may remove.
    created: HashSet<PathBuf>,
    /// Folders created and removed during this apply, for the registry.
    made_dirs: Vec<PathBuf>,
    removed_dirs: Vec<PathBuf>,
}

/// Where a target's folder is, relative to the root, and the entry's name in it.
struct Split<'a> {
    folders: Vec<&'a std::ffi::OsStr>,
    name: &'a std::ffi::OsStr,
}

impl AppTree {
    /// The tree at `root`; `created` are the folders the registry says the mapper made. The root
    /// itself is the operator's configured path: it may be a symlink (that choice is theirs).
    pub fn new(root: &Path, created: HashSet<PathBuf>) -> Self {
        Self {
            root: root.to_owned(),
            root_fd: None,
            created,
            made_dirs: Vec::new(),
            removed_dirs: Vec::new(),
        }
    }

    /// Folders this tree created and removed since it was opened (to record in the registry).
    pub fn take_changes(&mut self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        (
            std::mem::take(&mut self.made_dirs),
            std::mem::take(&mut self.removed_dirs),
        )
    }

    fn split<'a>(&self, target: &'a Path) -> Result<Split<'a>, String> {
        let relative = target.strip_prefix(&self.root).map_err(|_| {
            format!(
                "{} is outside the app root {}",
                target.display(),
                self.root.display()
            )
        })?;
        let mut parts = Vec::new();
        for c in relative.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                _ => return Err(format!("{} leaves the app root", target.display())),
            }
        }
        let name = parts
            .pop()
            .ok_or_else(|| format!("{} is the app root itself", target.display()))?;
        Ok(Split { folders: parts, name })
    }

    fn root_fd(&mut self, create: bool) -> Result<&OwnedFd, String> {
        if self.root_fd.is_none() {
            if create && !self.root.exists() {
                std::fs::create_dir_all(&self.root)
                    .map_err(|e| format!("creating the app root {}: {e}", self.root.display()))?;
            }
            let fd = rustix::fs::open(
                &self.root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("opening the app root {}: {e}", self.root.display()))?;
            self.root_fd = Some(fd);
        }
        self.root_fd
            .as_ref()
            .ok_or_else(|| "the app root is not open".to_owned())
    }

    /// The folder holding `target`, walked from the root now without following a symlink, and
    /// the entry's name in it; missing folders are made (and remembered as ours) when `create`.
    /// `Ok(None)`: the folder does not exist and was not to be made.
    fn folder_of(&mut self, target: &Path, create: bool) -> Result<Option<(OwnedFd, OsString)>, String> {
        let split = self.split(target)?;
        let name = split.name.to_os_string();
        let folders: Vec<OsString> = split.folders.iter().map(|f| f.to_os_string()).collect();
        let root = self.root.clone();
        let mut fd = rustix::io::dup(self.root_fd(create)?).map_err(|e| e.to_string())?;
        let mut at = root;
        for part in folders {
            at.push(&part);
            fd = match rustix::fs::openat(&fd, part.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, part.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            self.created.insert(at.clone());
                            self.made_dirs.push(at.clone());
                        }
                        // Another writer made it between our look and our mkdir: not ours.
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(format!("creating the folder {}: {e}", at.display())),
                    }
                    rustix::fs::openat(&fd, part.as_os_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| refusal(&at, e))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(refusal(&at, e)),
            };
        }
        Ok(Some((fd, name)))
    }

    /// `<dev>:<inode>` of the entry at `target` itself, looked up through its folder's handle.
    pub fn identity(&mut self, target: &Path) -> String {
        let Ok(Some((dir, name))) = self.folder_of(target, false) else {
            return String::new();
        };
        rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| format!("{}:{}", s.st_dev, s.st_ino))
            .unwrap_or_default()
    }

    /// A symlink at `target` with this text.
    pub fn symlink(&mut self, target: &Path, text: &Path) -> Result<(), String> {
        let (dir, name) = self.parent_for_write(target)?;
        rustix::fs::symlinkat(text, &dir, &name).map_err(|e| format!("linking {}: {e}", target.display()))
    }

    /// A hard link at `target` to the library file `source`; `Ok(false)` when they are on
    /// different filesystems (the caller falls back to a symlink).
    pub fn hard_link(&mut self, target: &Path, source: &Path) -> Result<bool, String> {
        let (dir, name) = self.parent_for_write(target)?;
        match rustix::fs::linkat(rustix::fs::CWD, source, &dir, &name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::XDEV) => Ok(false),
            Err(e) => Err(format!("hard-linking {}: {e}", target.display())),
        }
    }

    /// `target` replaced at once by a file with `fill`'s bytes: written to a temp file of ours in
    /// the same folder, flushed, then renamed over it.
    pub fn write_file(
        &mut self,
        target: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), String> {
        let (dir, name) = self.parent_for_write(target)?;
        sweep_stale_temps(&dir);
        let io = |e: std::io::Error| format!("writing {}: {e}", target.display());
        let (temp_name, file) = create_temp(&dir).map_err(io)?;
        let mut file = std::fs::File::from(file);
        let written = fill(&mut file)
            .and_then(|()| file.sync_all())
            .and_then(|()| rustix::fs::renameat(&dir, &temp_name, &dir, &name).map_err(std::io::Error::from));
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&dir, &temp_name, AtFlags::empty());
            return Err(io(e));
        }
        let _ = rustix::fs::fsync(&dir);
        Ok(())
    }

    /// A copy of `source` at `target`; returns `sha256:<hex>` of the bytes written (the record
    /// that tells this copy from a file the user put there later). `share_extents`: copied by
    /// the kernel (copy_file_range, which shares extents on btrfs/XFS), then hashed by reading
    /// the copy; otherwise hashed as the bytes go through.
    pub fn copy(&mut self, target: &Path, source: &Path, share_extents: bool) -> Result<String, String> {
        use sha2::Digest as _;
        use std::io::Read as _;
        let mut from =
            std::fs::File::open(source).map_err(|e| format!("reading {}: {e}", source.display()))?;
        if share_extents {
            self.write_file(target, |to| std::io::copy(&mut from, to).map(|_| ()))?;
            return self.content_sha256(target);
        }
        let mut hasher = sha2::Sha256::new();
        self.write_file(target, |to| {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
            }
        })?;
        Ok(format!("sha256:{:x}", hasher.finalize()))
    }

    /// `sha256:<hex>` of the plain file at `target`, read through its folder's handle without
    /// following a symlink.
    pub fn content_sha256(&mut self, target: &Path) -> Result<String, String> {
        use sha2::Digest as _;
        let Some((dir, name)) = self.folder_of(target, false)? else {
            return Err(format!("{} is gone", target.display()));
        };
        let fd = rustix::fs::openat(
            &dir,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("reading {}: {e}", target.display()))?;
        let mut file = std::fs::File::from(fd);
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| format!("reading {}: {e}", target.display()))?;
        Ok(format!("sha256:{:x}", hasher.finalize()))
    }

    /// A small file with this content at `target`.
    pub fn put(&mut self, target: &Path, content: &[u8]) -> Result<(), String> {
        self.write_file(target, |to| to.write_all(content))
    }

    /// Renames `target` to a free `<name>.pumas-aside[.N]` beside it; returns the new path.
    pub fn move_aside(&mut self, target: &Path) -> Result<PathBuf, String> {
        let Some((dir, name)) = self.folder_of(target, false)? else {
            return Err(format!("{} does not exist", target.display()));
        };
        let name = name.to_string_lossy().into_owned();
        for n in 0..1000 {
            let aside = if n == 0 {
                format!("{name}.pumas-aside")
            } else {
                format!("{name}.pumas-aside.{n}")
            };
            if rustix::fs::statat(&dir, aside.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_err() {
                rustix::fs::renameat(&dir, name.as_str(), &dir, aside.as_str())
                    .map_err(|e| format!("moving {} aside: {e}", target.display()))?;
                return Ok(target.with_file_name(aside));
            }
        }
        Err(format!("no free name to move {} aside", target.display()))
    }

    /// Removes the entry at `target` (gone already is fine), then each parent folder the mapper
    /// created that is now empty, never `keep` nor anything at or above the root.
    pub fn remove(&mut self, target: &Path, keep: &[PathBuf]) -> Result<(), String> {
        let Some((dir, name)) = self.folder_of(target, false)? else {
            return Ok(());
        };
        match rustix::fs::unlinkat(&dir, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(format!("removing {}: {e}", target.display())),
        }
        drop(dir);
        let mut folder = target.parent().map(Path::to_owned);
        while let Some(d) = folder {
            if d == self.root || !d.starts_with(&self.root) || keep.contains(&d) || !self.created.contains(&d)
            {
                break;
            }
            let Ok(Some((parent, name))) = self.folder_of(&d, false) else {
                break;
            };
            if rustix::fs::unlinkat(&parent, &name, AtFlags::REMOVEDIR).is_err() {
                break; // Not empty (or gone): it stays.
            }
            self.created.remove(&d);
            self.removed_dirs.push(d.clone());
            folder = d.parent().map(Path::to_owned);
        }
        Ok(())
    }

    /// Removes the file at `target` only when it is still the entry `identity` (`<dev>:<inode>`)
    /// that was checked, looked up through its folder's handle (no symlink followed).
    pub fn remove_checked(&mut self, target: &Path, identity: &str) -> Result<(), String> {
        let Some((dir, name)) = self.folder_of(target, false)? else {
            return Err(format!("{} is gone", target.display()));
        };
        let now = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| format!("{}:{}", s.st_dev, s.st_ino))
            .map_err(|e| format!("{}: {e}", target.display()))?;
        if now != identity {
            return Err(format!("{} changed since it was checked", target.display()));
        }
        rustix::fs::unlinkat(&dir, &name, AtFlags::empty())
            .map_err(|e| format!("removing {}: {e}", target.display()))
    }

    fn parent_for_write(&mut self, target: &Path) -> Result<(OwnedFd, OsString), String> {
        self.folder_of(target, true)?
            .ok_or_else(|| format!("the folder of {} could not be made", target.display()))
    }
}

fn refusal(at: &Path, e: Errno) -> String {
    match e {
        Errno::LOOP | Errno::NOTDIR
            if std::fs::symlink_metadata(at).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            format!(
                "{} is a symlink inside the app tree; Pumas does not follow it (it could lead outside the app root)",
                at.display()
            )
        }
        Errno::NOTDIR => format!("{} is a file, not a folder", at.display()),
        e => format!("opening the folder {}: {e}", at.display()),
    }
}

/// Numbers the temp files of this process.
static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);

fn temp_name(serial: u64) -> String {
    format!("{}{serial:x}", pumas_runtime::fsio::temp_prefix())
}

/// A new temp file in `dir`, named with the process's temp prefix, created `O_EXCL|O_NOFOLLOW`:
/// a name someone planted (even a symlink) is skipped, never opened.
fn create_temp(dir: &impl AsFd) -> std::io::Result<(String, OwnedFd)> {
    loop {
        let name = temp_name(TEMP_SERIAL.fetch_add(1, Ordering::Relaxed));
        match rustix::fs::openat(
            dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes temp files another (killed) process left in this folder (not below it).
fn sweep_stale_temps(dir: &OwnedFd) {
    let prefix = pumas_runtime::fsio::TEMP_PREFIX.as_bytes();
    let mine = pumas_runtime::fsio::temp_prefix().as_bytes();
    let Ok(mut entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    let mut removed = 0;
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.file_name().to_bytes();
        if name.starts_with(prefix)
            && !name.starts_with(mine)
            && entry.file_type() == rustix::fs::FileType::RegularFile
            && rustix::fs::unlinkat(dir, entry.file_name(), AtFlags::empty()).is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed temp files a stopped mapper left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) -> AppTree {
        AppTree::new(root, HashSet::new())
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_is_refused_at_the_write() {
        let disk = tempfile::tempdir().expect("tmp");
        let root = disk.path().join("app");
        let outside = disk.path().join("outside");
        std::fs::create_dir_all(root.join("models/loras")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        let mut t = tree(&root);
        t.put(&root.join("models/loras/a.txt"), b"a")
            .expect("a first write");
        // Swapped between two writes of the same apply.
        std::fs::rename(root.join("models/loras"), disk.path().join("moved")).expect("rename");
        std::os::unix::fs::symlink(&outside, root.join("models/loras")).expect("plant");
        let err = t
            .symlink(&root.join("models/loras/b"), Path::new("/library/b"))
            .expect_err("refused");
        assert!(err.contains("symlink inside the app tree"), "{err}");
        assert!(t.put(&root.join("models/loras/c.txt"), b"c").is_err());
        assert!(
            t.copy(
                &root.join("models/loras/d"),
                &disk.path().join("moved/a.txt"),
                false
            )
            .is_err()
        );
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 0);
    }

    #[test]
    fn planted_temp_names_are_skipped_not_followed() {
        let disk = tempfile::tempdir().expect("tmp");
        let root = disk.path().join("app");
        std::fs::create_dir_all(&root).expect("mkdir");
        let victim = disk.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        // The next names this process would use, all planted as symlinks to the victim.
        let next = TEMP_SERIAL.load(Ordering::Relaxed);
        for serial in next..next + 64 {
            std::os::unix::fs::symlink(&victim, root.join(temp_name(serial))).expect("plant");
        }
        let mut t = tree(&root);
        t.put(&root.join("x.yaml"), b"new").expect("written");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(std::fs::read(root.join("x.yaml")).expect("file"), b"new");
        assert!(
            TEMP_SERIAL.load(Ordering::Relaxed) > next + 64,
            "the planted names were skipped"
        );
    }

    #[test]
    fn only_folders_the_mapper_made_are_removed_with_the_last_link() {
        let disk = tempfile::tempdir().expect("tmp");
        let root = disk.path().join("app");
        let users = root.join("models/loras/mine");
        std::fs::create_dir_all(&users).expect("the user's empty folder");
        let mut t = tree(&root);
        let in_users = users.join("a.safetensors");
        let in_ours = root.join("models/loras/made/deeper/b.safetensors");
        t.symlink(&in_users, Path::new("/library/a")).expect("link a");
        t.symlink(&in_ours, Path::new("/library/b")).expect("link b");
        let (made, _) = t.take_changes();
        assert_eq!(
            made,
            vec![
                root.join("models/loras/made"),
                root.join("models/loras/made/deeper")
            ]
        );
        let keep = vec![root.join("models/loras")];
        t.remove(&in_users, &keep).expect("unlink a");
        t.remove(&in_ours, &keep).expect("unlink b");
        assert!(users.is_dir(), "the user's folder stays, empty as it was");
        assert!(!root.join("models/loras/made").exists(), "ours went");
        assert!(root.join("models/loras").is_dir());
        let (_, removed) = t.take_changes();
        assert_eq!(removed.len(), 2);
    }
}
