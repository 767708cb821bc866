//! Integration tests of the agent: a real `atoll_agent::run` against a fake master (a tonic
//! server the test drives), with real executor processes.
//!
//! The agent starts executors as `<executor> executor --spec FILE`; this test binary is that
//! executor (see `main`), which libtest's argument parsing would refuse — hence this small runner
//! (`harness = false`): `cargo test -p atoll-agent --test agent -- [FILTER…] [--list]`.

mod health;
mod masquerade;
mod netns;
mod network;
mod support;
mod tests;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("executor") {
        let code = match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--spec"), Some(spec)) => atoll_agent::executor::main_with_spec(std::path::Path::new(spec)),
            _ => {
                eprintln!("usage: executor --spec FILE");
                2
            }
        };
        std::process::exit(code);
    }
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    // libtest's options that take a value (nextest passes `--list --format terse`): their
    // values are not filters.
    let mut filters: Vec<&str> = Vec::new();
    let mut rest = args.iter().map(String::as_str);
    while let Some(arg) = rest.next() {
        match arg {
            "--format" | "--logfile" | "--test-threads" | "--skip" | "--color" | "-Z" => {
                rest.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter),
        }
    }
    let exact = args.iter().any(|a| a == "--exact");
    if args.iter().any(|a| a == "--ignored") {
        // None of these tests is ignored.
        if args.iter().any(|a| a == "--list") {
            return;
        }
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed\n");
        return;
    }
    let selected: Vec<&(&str, fn())> = tests::ALL
        .iter()
        .chain(health::ALL)
        .chain(network::ALL)
        .chain(masquerade::ALL)
        .filter(|(name, _)| {
            filters.is_empty() || filters.iter().any(|f| if exact { name == f } else { name.contains(f) })
        })
        .collect();
    if selected.is_empty() && !filters.is_empty() {
        // A filter that names no test is a mistake, not a pass.
        eprintln!("no test matches {filters:?}");
        std::process::exit(101);
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    let started = Instant::now();
    for (name, test) in &selected {
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(test)) {
            Ok(()) => println!("ok ({:.1}s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                println!("FAILED ({:.1}s)", t.elapsed().as_secs_f64());
                failed.push(*name);
            }
        }
    }
    let passed = selected.len() - failed.len();
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed; finished in {:.1}s\n", started.elapsed().as_secs_f64());
    } else {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
        println!("\ntest result: FAILED. {passed} passed; {} failed\n", failed.len());
        std::process::exit(101);
    }
}
