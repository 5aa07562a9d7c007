//! Differential tests of secretref's dotenv dialect against python-dotenv 1.2.4, the reader behind
//! Modal's `Secret.from_dotenv`: a committed corpus, generated files and the `files: dotenv`
//! render round trip, each compared value by value (or refusal by refusal) with the oracle.
//!
//! The oracle's venv is created on first use by `scripts/python-venv` (cached outside the
//! checkout). Generated cases: `DOTENV_DIFF_CASES` (default 256) per property; the long run is
//! `DOTENV_DIFF_CASES=10000 cargo test --test dotenv_diff -- --nocapture` (about half a minute).

mod files;
mod oracle;

use std::{cell::RefCell, collections::BTreeMap, path::Path, time::Instant};

use oracle::{Oracle, Outcome, Refusal, compare_file};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use secretref::render;

fn cases() -> u32 {
    std::env::var("DOTENV_DIFF_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // A divergence is turned into a corpus case by hand, with a name saying what it shows.
        failure_persistence: None,
        ..Config::default()
    })
}

/// Counts how the files were taken, so a run shows both values and refusals were compared.
#[derive(Default)]
struct Tally {
    accepted: u32,
    refused: u32,
    /// Refusals by reason.
    reasons: BTreeMap<&'static str, u32>,
}

impl Tally {
    fn add(&mut self, outcome: &Outcome) {
        let Outcome::Refused(refusal) = outcome else {
            self.accepted += 1;
            return;
        };
        self.refused += 1;
        let reason = match refusal {
            Refusal::Syntax { .. } => "syntax",
            Refusal::NoValue { .. } => "no `=`",
            Refusal::InvalidKey { .. } => "invalid key",
            Refusal::Unreadable => "not UTF-8",
        };
        *self.reasons.entry(reason).or_default() += 1;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} accepted, {} refused (", self.accepted, self.refused)?;
        let reasons: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        write!(f, "{})", reasons.join(", "))
    }
}

#[test]
fn the_corpus_reads_as_python_dotenv_reads_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dotenv_diff/corpus");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "env"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 60, "the corpus has {} cases, fewer than 60", paths.len());
    let mut oracle = Oracle::start();
    let mut tally = Tally::default();
    let mut divergences = Vec::new();
    for path in &paths {
        match compare_file(&mut oracle, path) {
            Ok(outcome) => tally.add(&outcome),
            Err(divergence) => divergences.push(divergence),
        }
    }
    println!(
        "corpus: {} cases, {tally}, {} divergences",
        paths.len(),
        divergences.len()
    );
    assert!(divergences.is_empty(), "{}", divergences.join("\n"));
    assert!(
        tally.accepted >= 40 && tally.refused >= 10,
        "the corpus should mostly compare values"
    );
}

#[test]
fn generated_files_read_as_python_dotenv_reads_them() {
    let oracle = RefCell::new(Oracle::start());
    let tally = RefCell::new(Tally::default());
    let started = Instant::now();
    let result = runner().run(&files::file(), |text| {
        let outcome = oracle.borrow_mut().compare(&text).map_err(TestCaseError::fail)?;
        tally.borrow_mut().add(&outcome);
        Ok(())
    });
    let tally = tally.into_inner();
    // The tally counts shrinking steps too, if a case failed.
    println!(
        "generated files: {} cases in {:.1?}: {tally}",
        cases(),
        started.elapsed()
    );
    if let Err(failure) = result {
        panic!("secretref and python-dotenv diverge (add the file to the corpus once fixed): {failure}");
    }
    // A third of the files or more get their values compared, not only a refusal.
    assert!(
        tally.accepted * 2 >= tally.refused,
        "the generator refuses too often: {tally}"
    );
}

#[test]
fn rendered_files_read_back_the_same_in_python_dotenv() {
    let oracle = RefCell::new(Oracle::start());
    let started = Instant::now();
    let result = runner().run(&files::secret_data(), |data| {
        let expected = Outcome::Values(data.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect());
        let outcome = oracle
            .borrow_mut()
            .compare(&render::dotenv(&data))
            .map_err(TestCaseError::fail)?;
        if outcome != expected {
            return Err(TestCaseError::fail(format!(
                "rendered {:?}\n  read back as {outcome:?}",
                render::dotenv(&data)
            )));
        }
        Ok(())
    });
    println!("render round trip: {} cases in {:.1?}", cases(), started.elapsed());
    if let Err(failure) = result {
        panic!("a rendered file does not read back the same: {failure}");
    }
}
