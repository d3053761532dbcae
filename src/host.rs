//! This machine, as the records see it: its name, and whether one of its processes has
//! ended (claims of a sweep, temporary files of an atomic write).

use std::path::Path;

/// This machine's name, for the records (claims, event and temporary file names): the
/// kernel's, else `$HOSTNAME`, else `localhost`.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// This machine's name as it may appear in a file name: no path separators, no `-` (the
/// separator of the names it goes into).
pub fn file_name_part() -> String {
    name().replace(['/', '\\', '-'], "_")
}

/// Whether the process `pid` of the machine `host` is known to have ended: `host` is this
/// machine and it has no such process. Of other machines, or where processes cannot be
/// looked up, nothing is known (`false`).
pub fn has_ended(host: &str, pid: u32) -> bool {
    let proc = Path::new("/proc");
    host == name() && proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process of this machine that has ended has ended; one that runs, or one of another
    /// machine, is not known to.
    #[test]
    fn an_ended_process_here_is_known_to_have_ended() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let ended = child.id();
        child.wait().unwrap();
        assert!(has_ended(&name(), ended));
        assert!(!has_ended(&name(), std::process::id()));
        assert!(!has_ended("elsewhere", ended));
    }
}
