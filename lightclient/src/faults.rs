//! Faulty sources, remembered in the data directory across runs until
//! their fault expires (`<datadir>/faults.txt`).
//!
//! One line per source: `<until, Unix seconds>\t<label>\t<reason>`. The
//! file is untrusted input: it is read with a size cap, and lines that do
//! not parse are ignored (the source is then simply asked again).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// File name inside the data directory.
const FILE_NAME: &str = "faults.txt";
/// Largest file read.
const MAX_BYTES: u64 = 256 * 1024;
/// Longest label or reason kept.
const MAX_FIELD: usize = 1024;

/// The unexpired faults stored under `dir`, by source label.
pub(crate) fn load(dir: &Path, now: u64) -> HashMap<String, (u64, String)> {
    let mut text = String::new();
    let read = std::fs::File::open(dir.join(FILE_NAME))
        .and_then(|f| f.take(MAX_BYTES).read_to_string(&mut text));
    if read.is_err() {
        return HashMap::new();
    }
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let until: u64 = parts.next()?.parse().ok()?;
            let label = parts.next()?;
            let why = parts.next().unwrap_or("");
            (until > now && label.len() <= MAX_FIELD)
                .then(|| (label.to_owned(), (until, clip(why))))
        })
        .collect()
}

/// Replace the stored faults with `faults` (written to a temporary file,
/// then renamed, so a crash leaves the old or the new list).
pub(crate) fn save(dir: &Path, faults: &HashMap<String, (u64, String)>) -> std::io::Result<()> {
    let mut out = String::new();
    for (label, (until, why)) in faults {
        if label.contains(['\t', '\n']) {
            continue;
        }
        out.push_str(&format!("{until}\t{label}\t{}\n", clip(why)));
    }
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, dir.join(FILE_NAME))
}

/// One line of at most [`MAX_FIELD`] bytes.
fn clip(s: &str) -> String {
    let mut s: String = s.replace(['\t', '\n', '\r'], " ");
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_expire_and_survive_junk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = HashMap::new();
        f.insert("http://a".to_owned(), (100, "lied\tabout\nwork".to_owned()));
        f.insert("http://b".to_owned(), (50, "old".to_owned()));
        save(dir.path(), &f).expect("save");
        let got = load(dir.path(), 60);
        assert_eq!(got.len(), 1, "b expired");
        assert_eq!(got["http://a"], (100, "lied about work".to_owned()));
        std::fs::write(dir.path().join(FILE_NAME), b"junk\n\xff\xfe\n99999999999\n").expect("w");
        assert!(load(dir.path(), 0).is_empty());
    }
}
