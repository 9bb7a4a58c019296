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

    /// Takes every free byte with a file of its own, writing until the disk refuses (the node
    /// on it keeps writing meanwhile, so no size measured beforehand would stay right).
    pub fn fill(&self) -> Result<u64, String> {
        use std::io::Write;
        let mut f = std::fs::File::create(&self.filler).map_err(|e| format!("creating the filler: {e}"))?;
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => return Ok(written),
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(written),
                Err(e) => return Err(format!("filling the disk: {e}")),
            }
        }
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
