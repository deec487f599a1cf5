//! Files only the node's user may read (the cluster secret, the S3 root key), written whole.
//! A leaf: configuration and the S3 endpoint both write them.

/// Writes `path` readable by its owner only, replacing it if it exists (a new file moved over
/// the old one, so a crash leaves one or the other whole).
pub fn write_private_replacing(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` readable by its owner only, failing if it exists (two nodes racing on one
/// directory must not overwrite each other's secret).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
