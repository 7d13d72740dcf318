//! The deployment files agree with the program: docker-compose accepts the compose file,
//! and every seatwatch command it runs (flags, config files, environment) is accepted by
//! seatwatch's own parser, checked with `--check-config` / `--dry-run`.
//!
//! `docker-compose` comes from Debian; `scripts/test.sh` installs it and sets
//! `SEATWATCH_STRICT_TOOLS=1`, under which a missing tool fails the test instead of
//! skipping that check.

mod support;

use std::path::Path;
use std::process::Command;

fn strict() -> bool {
    std::env::var("SEATWATCH_STRICT_TOOLS").is_ok_and(|v| v == "1")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let output = match Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(repo())
        .output()
    {
        Ok(output) => output,
        Err(e) if !strict() => {
            eprintln!("docker-compose not available ({e}); skipping (scripts/test.sh installs it)");
            return;
        }
        Err(e) => panic!("docker-compose is required here: {e}"),
    };
    assert!(
        output.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `${NAME:-default}` → `default`; anything else as written.
fn compose_value(raw: &str) -> String {
    match raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map(|(_, d)| d)
            .unwrap_or("")
            .to_owned(),
        None => raw.to_owned(),
    }
}

#[test]
fn every_compose_command_is_accepted_by_seatwatch() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let mut compose: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();

    let mut checked = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if service.get("build").is_none() {
            continue; // not the seatwatch image
        }
        let mut args: Vec<String> = service["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("/etc/seatwatch/", "deploy/compose/")
            })
            .collect();
        args.push(
            if args[0] == "topics" {
                "--dry-run"
            } else {
                "--check-config"
            }
            .into(),
        );

        let mut command = support::seatwatch();
        command.args(&args).current_dir(repo()).env_clear();
        if let Some(env) = service.get("environment").and_then(|e| e.as_mapping()) {
            for (key, value) in env {
                command.env(
                    key.as_str().unwrap(),
                    compose_value(value.as_str().unwrap()),
                );
            }
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "service {name}: seatwatch {} refused it:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        checked.push(name.to_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        ["alert", "ingest", "simulator", "topics", "transform"]
    );
}

#[test]
fn the_env_example_names_every_secret_the_compose_file_reads() {
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let example = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    for name in ["SF_CONSUMER_SECRET", "SF_PASSWORD", "SF_SECURITY_TOKEN"] {
        assert!(
            compose.contains(&format!("${{{name}:-")),
            "compose does not read {name}"
        );
        assert!(
            example.contains(&format!("{name}=")),
            ".env.example lacks {name}"
        );
    }
}
