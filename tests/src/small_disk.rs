//! A small disk under one node's data dir: a tmpfs of a fixed size mounted over the directory
//! (keeping what it held), so the node meets a real ENOSPC when it is filled. Needs root;
//! unmounted when dropped.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

/// A tmpfs mounted over a directory.
pub struct SmallDisk {
    path: PathBuf,
    filler: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB over `path` and copies back what the directory held. The
    /// node using it must be stopped meanwhile.
    pub fn mount(path: &Path, mib: u64) -> Result<SmallDisk, String> {
        let aside = path.with_extension("aside");
        std::fs::rename(path, &aside).map_err(|e| format!("moving {} aside: {e}", path.display()))?;
        std::fs::create_dir(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(path))?;
        let disk = SmallDisk { path: path.to_path_buf(), filler: path.join("filler") };
        run(Command::new("cp").arg("-a").arg(aside.join(".")).arg(path))?;
        std::fs::remove_dir_all(&aside).map_err(|e| format!("removing {}: {e}", aside.display()))?;
        Ok(disk)
    }

    /// Bytes free on the disk.
    pub fn available(&self) -> Result<u64, String> {
        let out = run(Command::new("df").args(["-B1", "--output=avail"]).arg(&self.path))?;
        out.lines().nth(1).and_then(|l| l.trim().parse().ok()).ok_or_else(|| format!("df said {out:?}"))
    }

    /// Takes all free space but `leave` bytes with a file of its own.
    pub fn fill(&self, leave: u64) -> Result<(), String> {
        let take = self.available()?.saturating_sub(leave);
        run(Command::new("fallocate").args(["-l", &take.to_string()]).arg(&self.filler)).map(|_| ())
    }

    /// Gives the space back.
    pub fn free(&self) -> Result<(), String> {
        std::fs::remove_file(&self.filler).map_err(|e| format!("removing {}: {e}", self.filler.display()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there does not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
