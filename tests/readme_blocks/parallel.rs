// Cargo.toml: scoped-defer = { version = "0.1", features = ["rayon"] }
//             rayon = "1"
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use rayon::prelude::*;
use scoped_defer::ParallelIteratorExt;

fn write_all(paths: &[PathBuf]) -> io::Result<()> {
    paths.par_iter().try_for_each_scoped(|s, path| {
        let file = s.hold_fallible(File::create(path)?, |f| f.sync_all());
        file.write_all(b"record")?;
        Ok::<_, io::Error>(())
    })?;
    Ok(())
}

fn main() -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("write_all.{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let paths: Vec<_> = (0..100).map(|i| dir.join(i.to_string())).collect();
    let written = write_all(&paths);
    fs::remove_dir_all(&dir)?;
    written
}
