//! The rollback a Go programmer writes: create a directory, write a config, start a service,
//! run a health check, and return the running service. Each step registers its undo; a
//! failure undoes exactly the steps done, last first; success undoes nothing and returns the
//! service. Written with anyhow, as a newcomer would, with no flag and no `RefCell`.

#![cfg(all(feature = "std", not(miri)))] // real directories and files

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use scoped_defer::{Held, try_scope};

/// What the undos did, in order, shared with the service's own stop.
type Log = Arc<Mutex<Vec<String>>>;

/// Where to fail: the step's number (1 to 4), or a panic at the health check.
#[derive(Clone, Copy, PartialEq)]
enum Failure {
    None,
    At(usize),
    Panic,
}

struct Service {
    pid_file: PathBuf,
    log: Log,
}

impl Service {
    fn start(dir: &Path, log: Log) -> anyhow::Result<Service> {
        let pid_file = dir.join("service.pid");
        fs::write(&pid_file, "4242").context("writing the pid file")?;
        Ok(Service { pid_file, log })
    }

    fn stop(self) {
        fs::remove_file(&self.pid_file).expect("the pid file is there");
        self.log.lock().unwrap().push("stop service".into());
    }
}

fn step(failure: Failure, number: usize, what: &str) -> anyhow::Result<()> {
    if failure == Failure::At(number) {
        bail!("{what} failed");
    }
    Ok(())
}

fn deploy(root: &Path, log: &Log, failure: Failure) -> anyhow::Result<Service> {
    let dir = root.join("app");
    let config = dir.join("config.toml");
    let service = try_scope(|s| {
        step(failure, 1, "creating the directory")?;
        fs::create_dir(&dir)?;
        s.defer_on_error(|| {
            fs::remove_dir(&dir).expect("the directory is empty by now");
            log.lock().unwrap().push("remove directory".into());
        });

        step(failure, 2, "writing the config")?;
        fs::write(&config, "port = 8080\n")?;
        s.defer_on_error(|| {
            fs::remove_file(&config).expect("the config is there");
            log.lock().unwrap().push("remove config".into());
        });

        step(failure, 3, "starting the service")?;
        let service = s.hold_entry(Service::start(&dir, log.clone())?, Service::stop);

        if failure == Failure::Panic {
            panic!("health check crashed");
        }
        step(failure, 4, "the health check")?;
        anyhow::Ok(Held::release(service))
    })?;
    Ok(service)
}

const UNDOS: [&str; 3] = ["remove directory", "remove config", "stop service"];

#[test]
fn success_undoes_nothing_and_returns_the_running_service() {
    let root = tempfile::tempdir().unwrap();
    let log = Log::default();
    let service = deploy(root.path(), &log, Failure::None).unwrap();
    assert!(log.lock().unwrap().is_empty(), "nothing undone");
    assert_eq!(
        fs::read_to_string(root.path().join("app/config.toml")).unwrap(),
        "port = 8080\n"
    );
    assert_eq!(fs::read_to_string(&service.pid_file).unwrap(), "4242");
    service.stop();
    assert_eq!(*log.lock().unwrap(), ["stop service"]);
}

#[test]
fn a_failure_undoes_exactly_the_steps_done_last_first() {
    for failed_step in 1..=4 {
        let root = tempfile::tempdir().unwrap();
        let log = Log::default();
        let error = deploy(root.path(), &log, Failure::At(failed_step))
            .err()
            .expect("the step failed");
        let expected: Vec<String> = UNDOS[..(failed_step - 1).min(3)]
            .iter()
            .rev()
            .map(|undo| undo.to_string())
            .collect();
        assert_eq!(
            *log.lock().unwrap(),
            expected,
            "failed at step {failed_step}"
        );
        assert!(error.to_string().ends_with("failed"), "{error}");
        assert!(!root.path().join("app").exists(), "everything removed");
    }
}

#[test]
fn a_panic_undoes_every_step_and_goes_on() {
    common::quiet_panics();
    let root = tempfile::tempdir().unwrap();
    let log = Log::default();
    let panicked = common::panic_message(|| {
        let _ = deploy(root.path(), &log, Failure::Panic);
    });
    assert_eq!(panicked.as_deref(), Some("health check crashed"));
    assert_eq!(
        *log.lock().unwrap(),
        ["stop service", "remove config", "remove directory"]
    );
    assert!(!root.path().join("app").exists());
}

/// `?` into `anyhow::Result` keeps the body error's context chain and the suppressed cleanup
/// errors in the message; `eyre` alike.
#[test]
fn anyhow_and_eyre_keep_the_chain_and_the_suppressed_errors() {
    let result: anyhow::Result<()> = (|| {
        try_scope(|s| {
            s.defer_fallible(|| Err::<(), _>("unlock failed"));
            Err(anyhow::anyhow!("disk full")).context("writing the config")?;
            anyhow::Ok(())
        })?;
        Ok(())
    })();
    let error = result.unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "writing the config: disk full (and cleanup failed: unlock failed)"
    );

    let result: eyre::Result<()> = (|| {
        try_scope(|s| {
            s.defer_fallible(|| Err::<(), _>("unlock failed"));
            Err(eyre::eyre!("disk full")).map_err(|e| e.wrap_err("writing the config"))?;
            eyre::Ok(())
        })?;
        Ok(())
    })();
    assert_eq!(
        result.unwrap_err().to_string(),
        "writing the config: disk full (and cleanup failed: unlock failed)"
    );

    // `?` into `io::Error` and `Box<dyn Error>` still works.
    let io: std::io::Result<()> = (|| {
        try_scope(|_| Err(std::io::Error::other("io failed")))?;
        Ok(())
    })();
    assert_eq!(io.unwrap_err().to_string(), "io failed");
    let boxed: Result<(), Box<dyn std::error::Error + Send + Sync>> = (|| {
        try_scope(|_| Err::<(), _>(std::io::Error::other("boxed")))?;
        Ok(())
    })();
    assert_eq!(boxed.unwrap_err().to_string(), "boxed");
}
