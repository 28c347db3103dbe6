//! The static names file: operator-given names for addresses and networks, reloaded on change.
//!
//! ```text
//! # comments and blank lines are ignored
//! 203.0.113.9      payments-api          an address
//! 10.20.0.0/16     corp-vpn              a network: every address in it, longest prefix wins
//! 2001:db8::/32    lab                   IPv6 too
//! ```
//!
//! One rule per line: an address or CIDR, whitespace, then the name (the rest of the line).
//! A bad line is reported with its number and skipped; the others still apply. The file is
//! checked for a change (modification time, size, inode) at most once per check interval,
//! by polling rather than inotify: Kubernetes ConfigMap volumes replace the file by swapping a
//! symlink, which a watch on the file itself misses, and a stat per second costs nothing.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The parsed rules.
#[derive(Debug, Default, Clone)]
struct Rules {
    v4: PrefixMap<Ipv4Net, String>,
    v6: PrefixMap<Ipv6Net, String>,
    count: usize,
}

impl Rules {
    fn lookup(&self, addr: IpAddr) -> Option<&str> {
        match addr.to_canonical() {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, name)| name.as_str()),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, name)| name.as_str()),
        }
    }
}

/// One load of the file: how many rules, and the lines that were skipped and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Rules in force after the load.
    pub rules: usize,
    /// `FILE:LINE: reason` for every skipped line.
    pub problems: Vec<String>,
}

/// A names file and the rules last read from it.
#[derive(Debug)]
pub struct NamesFile {
    path: PathBuf,
    rules: Rules,
    stamp: Option<FileStamp>,
    check_every: Duration,
    last_check: Instant,
}

impl NamesFile {
    /// Reads `path`; fails if it cannot be read at all (a bad line is not a failure).
    pub fn open(path: &Path, check_every: Duration) -> Result<(NamesFile, LoadReport), String> {
        let stamp = stamp_of(path).map_err(|e| format!("names file {}: {e}", path.display()))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("names file {}: {e}", path.display()))?;
        let (rules, problems) = parse(path, &text);
        let report = LoadReport { rules: rules.count, problems };
        let file =
            NamesFile { path: path.to_path_buf(), rules, stamp: Some(stamp), check_every, last_check: Instant::now() };
        Ok((file, report))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name the rules give `addr` (longest matching prefix), if any.
    pub fn lookup(&self, addr: IpAddr) -> Option<&str> {
        self.rules.lookup(addr)
    }

    /// Rules in force.
    pub fn rules(&self) -> usize {
        self.rules.count
    }

    /// Rereads the file if a check is due and it changed. `Ok(Some(report))` after a reload;
    /// `Err` if it changed but cannot be read (the old rules stay in force).
    pub fn reload_if_changed(&mut self) -> Result<Option<LoadReport>, String> {
        if self.last_check.elapsed() < self.check_every {
            return Ok(None);
        }
        self.last_check = Instant::now();
        let unreadable =
            |e: std::io::Error| format!("names file {}: {e}; keeping the previous rules", self.path.display());
        let stamp = stamp_of(&self.path).map_err(unreadable)?;
        if self.stamp.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.path).map_err(unreadable)?;
        let (rules, problems) = parse(&self.path, &text);
        self.rules = rules;
        self.stamp = Some(stamp);
        Ok(Some(LoadReport { rules: self.rules.count, problems }))
    }
}

fn stamp_of(path: &Path) -> std::io::Result<FileStamp> {
    // metadata() follows symlinks: a ConfigMap swap shows as a new inode.
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

fn parse(path: &Path, text: &str) -> (Rules, Vec<String>) {
    let mut rules = Rules::default();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), index + 1);
        let (target, name) = match line.split_once(char::is_whitespace) {
            Some((target, name)) => (target, name.trim()),
            None => {
                problems.push(format!("{at}: expected `ADDRESS-OR-CIDR NAME`, found only {line:?}"));
                continue;
            }
        };
        if name.len() > flowgraph_schema::MAX_STRING_LEN {
            problems.push(format!("{at}: the name is longer than {} bytes", flowgraph_schema::MAX_STRING_LEN));
            continue;
        }
        let net = match target.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => match target.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr.to_canonical()),
                Err(_) => {
                    problems.push(format!("{at}: {target:?} is neither an IP address nor a CIDR network"));
                    continue;
                }
            },
        };
        let previous = match net {
            IpNet::V4(net) => rules.v4.insert(net, name.to_string()),
            IpNet::V6(net) => rules.v6.insert(net, name.to_string()),
        };
        if previous.is_some() {
            problems.push(format!("{at}: {net} appears again; this later line wins"));
        } else {
            rules.count += 1;
        }
    }
    (rules, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("names.txt");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn longest_prefix_wins_and_bad_lines_are_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "# fleet\n10.0.0.0/8 corp\n10.20.0.0/16   corp vpn\n10.20.0.7 bastion\nnot-an-ip x\n2001:db8::/32 lab\n::ffff:192.0.2.1 mapped\nlonely\n",
        );
        let (file, report) = NamesFile::open(&path, Duration::ZERO).unwrap();
        assert_eq!(report.rules, 5);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report.problems[0].ends_with("names.txt:5: \"not-an-ip\" is neither an IP address nor a CIDR network"));
        assert!(report.problems[1].contains("names.txt:8: expected `ADDRESS-OR-CIDR NAME`"));
        let name = |a: &str| file.lookup(a.parse().unwrap());
        assert_eq!(name("10.1.2.3"), Some("corp"));
        assert_eq!(name("10.20.9.9"), Some("corp vpn"));
        assert_eq!(name("10.20.0.7"), Some("bastion"));
        assert_eq!(name("2001:db8::9"), Some("lab"));
        assert_eq!(name("192.0.2.1"), Some("mapped"));
        assert_eq!(name("::ffff:10.1.2.3"), Some("corp"));
        assert_eq!(name("192.168.1.1"), None);
    }

    #[test]
    fn a_change_is_picked_up_and_an_unreadable_file_keeps_the_old_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "10.0.0.1 a\n");
        let (mut file, _) = NamesFile::open(&path, Duration::ZERO).unwrap();
        assert_eq!(file.reload_if_changed(), Ok(None), "unchanged file reloaded");
        write(dir.path(), "10.0.0.1 b\n10.0.0.2 c\n");
        let report = file.reload_if_changed().unwrap().expect("change missed");
        assert_eq!(report.rules, 2);
        assert_eq!(file.lookup("10.0.0.1".parse().unwrap()), Some("b"));
        std::fs::remove_file(&path).unwrap();
        let err = file.reload_if_changed().unwrap_err();
        assert!(err.contains("keeping the previous rules"), "{err}");
        assert_eq!(file.lookup("10.0.0.2".parse().unwrap()), Some("c"));
    }
}
