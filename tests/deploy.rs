//! The deployment files agree with the program and with the tools that will read them:
//!
//! - docker-compose accepts the compose file, every seatwatch command it runs (flags,
//!   config files, environment) is accepted by seatwatch's own parser (`--check-config` /
//!   `--dry-run`), its dependencies wait for healthchecks that exist, and the bash probes
//!   of the seatwatch containers tell a ready service from one that is not;
//! - promtool accepts the Prometheus config and its rules (and their unit tests), amtool
//!   the Alertmanager config, and the Grafana dashboard and the alert rules query only
//!   metrics that the services register (names read from the Rust sources);
//! - the Kubernetes manifests (`deploy/kubernetes`), rendered with `kubectl kustomize` when
//!   kubectl is there and otherwise by this file's own reading of the base's kustomizations,
//!   pass the Kubernetes JSON schemas (`kubernetes-validate`, which ships them), hold no
//!   secret values, follow the platform rules (non-root, read-only, probes, resources,
//!   budgets, autoscaling within the partition count), and every container's command,
//!   ConfigMap TOML and environment is accepted by `seatwatch … --check-config`.
//!
//! `docker-compose`, `promtool` and `amtool` come from Debian and `kubernetes-validate`
//! from PyPI; `scripts/test.sh` installs them and sets `REQUIRE_TEST_TOOLS=1`, under
//! which a missing tool fails the test instead of skipping that check. kubectl is not in
//! those registries: without it the overlay checks that need rendering are skipped.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value as Json};

fn strict() -> bool {
    std::env::var("REQUIRE_TEST_TOOLS").is_ok_and(|v| v == "1")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a tool that `scripts/test.sh` installs. `None` (after saying so) when it is
/// missing and the run is not strict.
fn tool(program: &str, args: &[&str], installed_by: &str) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(output) => Some(output),
        Err(e) if !strict() => {
            eprintln!("{program} not available ({e}); skipping ({installed_by})");
            None
        }
        Err(e) => panic!("{program} is required here ({installed_by}): {e}"),
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// docker-compose
// ---------------------------------------------------------------------------------------

fn compose() -> serde_norway::Value {
    let mut compose: serde_norway::Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    compose.apply_merge().unwrap();
    compose
}

fn compose_services(compose: &serde_norway::Value) -> &serde_norway::Mapping {
    compose["services"].as_mapping().unwrap()
}

fn as_strings(value: &serde_norway::Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {value:?}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let Some(output) = tool(
        "docker-compose",
        &["-f", "docker-compose.yml", "config", "-q"],
        "scripts/test.sh installs Debian's docker-compose",
    ) else {
        return;
    };
    assert_success("docker-compose config", &output);
}

/// Compose's interpolation: `${NAME:-default}` and `${NAME}` anywhere in `raw`, from
/// `vars` (as if from `.env`), else the default.
fn interpolate(raw: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unclosed ${") + start;
        let inner = &rest[start + 2..end];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        match vars.get(name) {
            Some(value) if !value.is_empty() => out.push_str(value),
            _ => out.push_str(default),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs the command of every seatwatch service of the compose file through seatwatch's
/// own checks, with `.env` holding `vars`. Returns the names of the services checked.
fn check_compose_commands(vars: &BTreeMap<&str, &str>) -> Vec<String> {
    let compose = compose();
    let mut checked = Vec::new();
    for (name, service) in compose_services(&compose) {
        let name = name.as_str().unwrap();
        if service.get("build").is_none() {
            continue; // not the seatwatch image
        }
        let mut args: Vec<String> = as_strings(&service["command"])
            .iter()
            .map(|a| interpolate(a, vars).replace("/etc/seatwatch/", "deploy/compose/"))
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
                    interpolate(value.as_str().unwrap(), vars),
                );
            }
        }
        let output = command.output().unwrap();
        assert_success(
            &format!("service {name}: seatwatch {}", args.join(" ")),
            &output,
        );
        checked.push(name.to_owned());
    }
    checked.sort();
    checked
}

#[test]
fn every_compose_command_is_accepted_by_seatwatch() {
    assert_eq!(
        check_compose_commands(&BTreeMap::new()),
        ["alert", "ingest", "simulator", "topics", "transform"]
    );
}

#[test]
fn the_real_org_variant_of_the_compose_file_is_accepted_by_seatwatch() {
    // What .env.example sets up: ingest reads ingest-real-org.toml, secrets from .env.
    let vars = BTreeMap::from([
        ("INGEST_CONFIG", "ingest-real-org.toml"),
        ("SF_CONSUMER_SECRET", "from-dot-env"),
        ("SF_PASSWORD", "from-dot-env"),
        ("SF_SECURITY_TOKEN", "from-dot-env"),
    ]);
    let compose = compose();
    let ingest = as_strings(&compose_services(&compose)["ingest"]["command"]);
    let config = interpolate(ingest.last().unwrap(), &vars);
    assert_eq!(config, "/etc/seatwatch/ingest-real-org.toml");
    assert!(repo().join("deploy/compose/ingest-real-org.toml").exists());
    assert_eq!(check_compose_commands(&vars).len(), 5);
}

#[test]
fn the_env_example_names_every_variable_the_compose_file_reads() {
    let compose = read("docker-compose.yml");
    let example = read(".env.example");
    let mut read_by_compose = BTreeSet::new();
    for (i, _) in compose.match_indices("${") {
        let name: String = compose[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        read_by_compose.insert(name);
    }
    for name in ["SF_CONSUMER_SECRET", "SF_PASSWORD", "SF_SECURITY_TOKEN"] {
        assert!(
            compose.contains(&format!("${{{name}:-")),
            "compose does not read {name}"
        );
    }
    for name in &read_by_compose {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{name}="))),
            ".env.example lacks {name}"
        );
    }
}

/// The listen port of a seatwatch compose service: `listen_addr` of its config file, or
/// the simulator's `--listen` flag.
fn compose_listen_port(service: &serde_norway::Value) -> Option<u16> {
    let args = as_strings(&service["command"]);
    if let Some(i) = args.iter().position(|a| a == "--listen") {
        return Some(port_of(&args[i + 1]));
    }
    let i = args.iter().position(|a| a == "--config")?;
    let path = interpolate(&args[i + 1], &BTreeMap::new()).replace("/etc/seatwatch/", "");
    let toml = read(Path::new("deploy/compose").join(path));
    Some(port_of(&toml_listen_addr(&toml)))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// `listen_addr = "…"` of a service TOML (a top-level key, so before any table).
fn toml_listen_addr(toml: &str) -> String {
    toml.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "listen_addr").then(|| value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no top-level listen_addr in:\n{toml}"))
}

#[test]
fn compose_dependencies_wait_for_healthchecks_that_exist() {
    let compose = compose();
    // docker-compose 1.29 refuses a top-level `name`.
    assert!(compose.get("name").is_none());
    let services = compose_services(&compose);
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for wanted in [
        "redpanda",
        "topics",
        "ingest",
        "simulator",
        "transform",
        "alert",
        "prometheus",
        "alertmanager",
        "grafana",
        "console",
    ] {
        assert!(names.contains(wanted), "compose lacks service {wanted}");
    }

    let mut conditions = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if let Some(deps) = service.get("depends_on").and_then(|d| d.as_mapping()) {
            for (dep, spec) in deps {
                let dep = dep.as_str().unwrap();
                let target = &services[dep];
                match spec["condition"].as_str().unwrap() {
                    "service_healthy" => assert!(
                        target.get("healthcheck").is_some(),
                        "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                    ),
                    "service_completed_successfully" => assert_eq!(
                        target["restart"].as_str(),
                        Some("no"),
                        "{name} waits for {dep} to complete, but {dep} restarts"
                    ),
                    "service_started" => {}
                    other => panic!("{name}: unknown condition {other}"),
                }
                conditions += 1;
            }
        }
        // Long-running seatwatch services say when they are ready.
        if service.get("build").is_some() && service["restart"].as_str() != Some("no") {
            assert!(
                service.get("healthcheck").is_some(),
                "{name} has no healthcheck"
            );
        }
        // Every file mounted from the repository exists.
        if let Some(volumes) = service.get("volumes").and_then(|v| v.as_sequence()) {
            for volume in volumes {
                let source = volume.as_str().unwrap().split(':').next().unwrap();
                if source.starts_with("./") {
                    assert!(
                        repo().join(source).exists(),
                        "{name} mounts {source}, which does not exist"
                    );
                }
            }
        }
    }
    assert!(conditions >= 7, "only {conditions} depends_on conditions");
    for (name, service) in services {
        if let Some(test) = service.get("healthcheck").map(|h| &h["test"]) {
            let script = as_strings(test).join(" ");
            // Compose would interpolate a `$` in a healthcheck script.
            assert!(
                !script.contains('$'),
                "{name:?}'s healthcheck has a $: {script}"
            );
            // The seatwatch image (Debian slim) has neither curl nor wget.
            if service.get("build").is_some() {
                assert!(
                    !script.contains("curl") && !script.contains("wget"),
                    "{name:?}: {script}"
                );
            }
        }
    }
}

/// The bash script of a seatwatch service's healthcheck.
fn bash_probe(service: &serde_norway::Value) -> String {
    let test = as_strings(&service["healthcheck"]["test"]);
    assert_eq!(test[..3], ["CMD", "bash", "-c"], "{test:?}");
    test[3].clone()
}

fn run_probe(script: &str) -> bool {
    Command::new("bash")
        .args(["-c", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("bash runs")
        .status
        .success()
}

#[test]
fn compose_probes_tell_a_ready_service_from_one_that_is_not() {
    let compose = compose();
    let services = compose_services(&compose);
    let mut probed = BTreeSet::new();
    for (name, service) in services {
        if service.get("build").is_none() || service.get("healthcheck").is_none() {
            continue;
        }
        let script = bash_probe(service);
        let port = compose_listen_port(service).unwrap();
        assert!(
            script.contains(&format!("/dev/tcp/127.0.0.1/{port} ")),
            "{name:?}'s probe does not connect to its own port {port}: {script}"
        );
        probed.insert(name.as_str().unwrap().to_owned());
    }
    assert_eq!(
        probed,
        BTreeSet::from(["alert", "ingest", "simulator", "transform"].map(String::from))
    );

    // alert with a broker that is not there: alive, never ready.
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    // A clean environment: `REQUIRE_TEST_TOOLS` would be read as a config key.
    let mut command = support::seatwatch();
    command
        .env_clear()
        .args(["alert", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--bootstrap-servers")
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .env("SEATWATCH_LOG", "warn");
    let mut alert = support::Proc::spawn("alert", command, dir.path());
    let readyz = bash_probe(&services["alert"]).replace("/9103 ", &format!("/{port} "));
    let healthz = readyz.replace("/readyz", "/healthz");
    assert_ne!(readyz, healthz);
    support::wait_for("alert's /healthz", Duration::from_secs(30), || {
        alert.assert_running();
        run_probe(&healthz).then_some(())
    });
    assert!(
        !run_probe(&readyz),
        "the probe passed a service that is not ready"
    );
    alert.terminate(Duration::from_secs(25));
    assert!(
        !run_probe(&healthz),
        "the probe passed with nothing listening"
    );

    // The simulator's probe against a simulator.
    let port = support::free_port();
    let mut command = support::seatwatch();
    command
        .env_clear()
        .args(["simulator", "--listen", &format!("127.0.0.1:{port}")]);
    let mut simulator = support::Proc::spawn("simulator", command, dir.path());
    let probe = bash_probe(&services["simulator"]).replace("/8085 ", &format!("/{port} "));
    support::wait_for("the simulator's probe", Duration::from_secs(30), || {
        simulator.assert_running();
        run_probe(&probe).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// Prometheus, Alertmanager, Grafana
// ---------------------------------------------------------------------------------------

/// Every metric name the services register: string literals `"seatwatch_…"` in the
/// services' and the shared crate's sources, and which of them are histograms.
fn exported_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in [
        "common/src",
        "ingest/src",
        "transform/src",
        "alert/src",
        "src",
    ] {
        walk(&repo().join(dir), &mut files);
    }
    let (mut names, mut histograms) = (BTreeSet::new(), BTreeSet::new());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("\"seatwatch_") {
            let name: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let closed = text[i + 1 + name.len()..].starts_with('"');
            if !closed || name.ends_with('_') {
                continue; // a prefix, a label set or a tracing target, not a name
            }
            let before = &text[i.saturating_sub(120)..i];
            if before.contains("HistogramOpts::new(") {
                histograms.insert(name.clone());
            }
            names.insert(name);
        }
    }
    assert!(
        names.len() >= 20,
        "found only {} metric names in the sources: {names:?}",
        names.len()
    );
    (names, histograms)
}

/// The metric names a PromQL expression selects: identifiers outside label matchers,
/// ranges, strings and `by (…)`-style lists, that are not functions or keywords.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        // aggregation operators, which may stand before `by (…)` instead of `(`
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: usize, close: char| -> usize {
        let mut j = i + 1;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' || chars[j] == '\'' || chars[j] == '`' {
                let quote = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != quote {
                    j += 1;
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '"' | '\'' | '`' => i = skip_to(i, c),
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if LISTS.contains(&word.to_ascii_lowercase().as_str()) && called {
                    i = skip_to(next, ')');
                } else if !called && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() => {
                // numbers and durations (5m, 1e3)
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            '$' => {
                // a Grafana variable outside a matcher or range
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn the_promql_reader_finds_metric_names_only() {
    let names = promql_metric_names(
        "histogram_quantile(0.95, sum by (org, le) (rate(seatwatch_ingest_sync_duration_seconds_bucket{org=~\"$org\"}[$__rate_interval]))) / on (org) group_left up > bool 1e3",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "seatwatch_ingest_sync_duration_seconds_bucket".to_owned(),
            "up".to_owned()
        ])
    );
}

/// Fails unless every metric `expr` selects is registered by a service (or is one that
/// Prometheus itself makes), and it selects at least one.
fn assert_queries_exported_metrics(
    what: &str,
    expr: &str,
    names: &BTreeSet<String>,
    histograms: &BTreeSet<String>,
) {
    const PROMETHEUS_MADE: &[&str] = &["up", "ALERTS"];
    let used = promql_metric_names(expr);
    assert!(!used.is_empty(), "{what}: {expr:?} selects no metric");
    for name in used {
        let histogram_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| histograms.contains(base))
        });
        assert!(
            names.contains(&name) || histogram_series || PROMETHEUS_MADE.contains(&name.as_str()),
            "{what}: {expr:?} uses {name}, which no seatwatch service exports (they export {names:?})"
        );
    }
}

/// Checks PromQL syntax with promtool: the expressions become recording rules.
fn promtool_checks_expressions(exprs: &[String]) {
    let rules = json!({
        "groups": [{
            "name": "queries",
            "rules": exprs.iter().enumerate().map(|(i, e)| json!({
                "record": format!("query:{i}"),
                "expr": e,
            })).collect::<Vec<_>>(),
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.yml");
    std::fs::write(&path, serde_json::to_string_pretty(&rules).unwrap()).unwrap();
    if let Some(output) = tool(
        "promtool",
        &["check", "rules", path.to_str().unwrap()],
        "scripts/test.sh installs Debian's prometheus",
    ) {
        assert_success("promtool check rules (the queries)", &output);
    }
}

#[test]
fn promtool_accepts_the_prometheus_config_and_its_rules() {
    let Some(output) = tool(
        "promtool",
        &["check", "config", "deploy/compose/prometheus.yml"],
        "scripts/test.sh installs Debian's prometheus",
    ) else {
        return;
    };
    assert_success("promtool check config", &output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("rules found"),
        "no rules were checked:\n{text}"
    );

    let output = tool(
        "promtool",
        &["test", "rules", "deploy/compose/prometheus-rules.test.yml"],
        "scripts/test.sh installs Debian's prometheus",
    )
    .unwrap();
    assert_success("promtool test rules", &output);
}

#[test]
fn prometheus_scrapes_every_seatwatch_service_and_alerts_through_alertmanager() {
    let config: Json = serde_norway::from_str(&read("deploy/compose/prometheus.yml")).unwrap();
    let compose = compose();
    let services = compose_services(&compose);

    let mut targets = BTreeSet::new();
    for job in config["scrape_configs"].as_array().unwrap() {
        for static_config in job["static_configs"].as_array().unwrap() {
            for target in static_config["targets"].as_array().unwrap() {
                targets.insert(target.as_str().unwrap().to_owned());
            }
        }
    }
    for service in ["ingest", "transform", "alert"] {
        let port = compose_listen_port(&services[service]).unwrap();
        let target = format!("{service}:{port}");
        assert!(
            targets.contains(&target),
            "Prometheus does not scrape {target}"
        );
        let published = as_strings(&services[service]["ports"]);
        assert!(
            published.contains(&format!("{port}:{port}")),
            "{service}: {published:?}"
        );
    }

    let alertmanagers = &config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    assert_eq!(alertmanagers, &json!(["alertmanager:9093"]));
    assert!(services.contains_key("alertmanager"));

    // Each rule file sits next to prometheus.yml, where compose mounts it.
    let volumes = as_strings(&services["prometheus"]["volumes"]);
    for file in config["rule_files"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        assert!(
            volumes.contains(&format!(
                "./deploy/compose/{file}:/etc/prometheus/{file}:ro"
            )),
            "compose does not mount {file}: {volumes:?}"
        );
    }
}

#[test]
fn amtool_accepts_the_alertmanager_config() {
    let Some(output) = tool(
        "amtool",
        &["check-config", "deploy/compose/alertmanager.yml"],
        "scripts/test.sh installs Debian's prometheus-alertmanager",
    ) else {
        return;
    };
    assert_success("amtool check-config", &output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("SUCCESS"));
}

#[test]
fn the_alert_rules_query_only_exported_metrics() {
    let (names, histograms) = exported_metrics();
    let rules: Json = serde_norway::from_str(&read("deploy/compose/prometheus-rules.yml")).unwrap();
    let mut count = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let what = format!("rule {}", rule["alert"]);
            assert_queries_exported_metrics(
                &what,
                rule["expr"].as_str().unwrap(),
                &names,
                &histograms,
            );
            count += 1;
        }
    }
    assert!(count >= 5);
}

/// Every panel of a dashboard, rows' nested panels included.
fn dashboard_panels(dashboard: &Json) -> Vec<&Json> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    panels
}

#[test]
fn the_grafana_dashboard_shows_only_exported_metrics() {
    let (names, histograms) = exported_metrics();
    let dashboard: Json =
        serde_json::from_str(&read("deploy/compose/grafana/dashboards/seatwatch.json"))
            .expect("the dashboard is JSON");
    assert!(!dashboard["uid"].as_str().unwrap().is_empty());

    let datasources: Json = serde_norway::from_str(&read(
        "deploy/compose/grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    assert_eq!(datasource["url"], "http://prometheus:9090");
    let uid = datasource["uid"].as_str().unwrap();

    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for panel in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        titles.push(title.clone());
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        assert_eq!(panel["datasource"]["uid"], uid, "panel {title:?}");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], uid, "panel {title:?}");
            let expr = target["expr"].as_str().unwrap();
            assert_queries_exported_metrics(&format!("panel {title:?}"), expr, &names, &histograms);
            exprs.push(expr.to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let query = variable["definition"].as_str().unwrap();
        let metric = query
            .strip_prefix("label_values(")
            .and_then(|q| q.split(',').next())
            .unwrap();
        assert!(
            names.contains(metric),
            "variable query {query} uses {metric}"
        );
    }

    // What the dashboard is for.
    for wanted in [
        "Seats per pool",
        "Utilisation",
        "Idle seats",
        "Alerts firing",
        "API allowance",
        "API requests",
        "Last successful sync",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted:?}: {titles:?}"
        );
    }
    // Grafana's variables, as Prometheus would see them once substituted.
    let substituted: Vec<String> = exprs
        .iter()
        .map(|e| e.replace("$__rate_interval", "5m").replace("$org", ".*"))
        .collect();
    assert!(
        substituted.iter().all(|e| !e.contains('$')),
        "{substituted:?}"
    );
    promtool_checks_expressions(&substituted);
}

#[test]
fn grafana_provisioning_loads_the_dashboard_compose_mounts() {
    let providers: Json = serde_norway::from_str(&read(
        "deploy/compose/grafana/provisioning/dashboards/seatwatch.yml",
    ))
    .unwrap();
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let compose = compose();
    let grafana = &compose_services(&compose)["grafana"];
    let volumes = as_strings(&grafana["volumes"]);
    assert!(
        volumes.contains(&format!("./deploy/compose/grafana/dashboards:{path}:ro")),
        "the provider reads {path}, compose mounts {volumes:?}"
    );
    assert!(volumes
        .contains(&"./deploy/compose/grafana/provisioning:/etc/grafana/provisioning:ro".into()));
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap();
    let file = home.strip_prefix(&format!("{path}/")).unwrap();
    assert!(repo()
        .join("deploy/compose/grafana/dashboards")
        .join(file)
        .exists());
}

// ---------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------

const BASE: &str = "deploy/kubernetes/base";
const ORG_GROUPS: &str = "deploy/kubernetes/overlays/org-groups";
const EXAMPLE_SECRET: &str = "deploy/kubernetes/examples/ingest-salesforce-secret.example.yaml";
/// The oldest Kubernetes release the manifests are checked against (and the newest that
/// kubernetes-validate knows, its default).
const OLDEST_KUBERNETES: &str = "1.29";
/// The ops port of each service, as the brief of the manifests fixes them.
const PORTS: [(&str, u16); 3] = [("ingest", 9101), ("transform", 9102), ("alert", 9103)];

fn yaml_documents(text: &str) -> Vec<Json> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Json::deserialize(doc).expect("YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `kubectl kustomize DIR`, or `None` when kubectl is not installed (it is not in the
/// registries scripts/test.sh may use, so this is never strict).
fn kubectl_kustomize(dir: &str) -> Option<Vec<Json>> {
    let output = match Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(repo())
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("kubectl not available ({e}); using the test's own rendering of {dir}");
            return None;
        }
    };
    assert_success(&format!("kubectl kustomize {dir}"), &output);
    Some(yaml_documents(&String::from_utf8(output.stdout).unwrap()))
}

/// The test's own rendering of a kustomization that uses only `resources` (files and
/// directories holding kustomizations) and `configMapGenerator` (`files`, `literals`):
/// what the base needs. Generated ConfigMaps keep their plain names (no hash suffix).
fn render_own(dir: &Path) -> Vec<Json> {
    let kustomization: Json =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    for key in kustomization.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "resources", "configMapGenerator"].contains(&key.as_str()),
            "{}: the test's renderer does not know `{key}`; render this one with kubectl",
            dir.display()
        );
    }
    let mut docs = Vec::new();
    for resource in kustomization["resources"].as_array().into_iter().flatten() {
        let path = dir.join(resource.as_str().unwrap());
        if path.is_dir() {
            docs.extend(render_own(&path));
        } else {
            docs.extend(yaml_documents(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    for generator in kustomization["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut data = serde_json::Map::new();
        for file in generator["files"].as_array().into_iter().flatten() {
            let file = file.as_str().unwrap();
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            data.insert(file.to_owned(), Json::String(text));
        }
        for literal in generator["literals"].as_array().into_iter().flatten() {
            let (key, value) = literal.as_str().unwrap().split_once('=').unwrap();
            data.insert(key.to_owned(), Json::String(value.to_owned()));
        }
        assert!(generator["behavior"].is_null(), "{}", dir.display());
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": generator["name"] },
            "data": data,
        }));
    }
    docs
}

/// The base, rendered by kubectl when it is there, else by the test.
fn base() -> Vec<Json> {
    kubectl_kustomize(BASE).unwrap_or_else(|| render_own(&repo().join(BASE)))
}

fn kind_name(doc: &Json) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap(),
        doc["metadata"]["name"].as_str().unwrap()
    )
}

fn of_kind<'a>(docs: &'a [Json], kind: &str) -> Vec<&'a Json> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
}

/// Deployments and Jobs with their pod specs.
fn workloads(docs: &[Json]) -> Vec<(String, &Json)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job")
        .map(|d| (kind_name(d), &d["spec"]["template"]["spec"]))
        .collect()
}

fn strings(value: &Json) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// What seatwatch said about one container's command.
struct Checked {
    args: Vec<String>,
    stdout: String,
    /// The config file's text, as the ConfigMap holds it.
    config: Option<String>,
}

/// Runs one container of a rendered workload through seatwatch's own checks: its args
/// plus `--check-config` (`--dry-run` for `topics`), its ConfigMap volumes written to a
/// temporary directory, its environment from literal values and ConfigMaps, secret keys
/// replaced by placeholders, and a placeholder file for every file the config reads from
/// a mounted Secret.
fn check_container(docs: &[Json], workload: &str, pod: &Json, container: &Json) -> Checked {
    let name = format!("{workload} container {}", container["name"]);
    assert!(
        container["command"].is_null(),
        "{name}: runs the image's entrypoint (seatwatch) with args"
    );
    let dir = tempfile::tempdir().unwrap();
    let local = |mount: &str| dir.path().join(mount.trim_start_matches('/'));

    // Volumes: ConfigMap files written out, Secret directories made empty.
    let mut config_files: Vec<(PathBuf, String)> = Vec::new();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut secret_mounts: Vec<PathBuf> = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let path = mount["mountPath"].as_str().unwrap();
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{name}: no volume {}", mount["name"]));
        let target = local(path);
        std::fs::create_dir_all(&target).unwrap();
        if let Some(config_map) = volume.get("configMap") {
            assert!(config_map["items"].is_null(), "{name}: ConfigMap items");
            let source = find(docs, "ConfigMap", config_map["name"].as_str().unwrap());
            for (key, text) in source["data"].as_object().unwrap() {
                config_files.push((target.join(key), text.as_str().unwrap().to_owned()));
            }
        } else if let Some(secret) = volume.get("secret") {
            assert!(
                secret["items"].is_null(),
                "{name}: a Secret volume lists items; the test expects every key mounted"
            );
            secret_mounts.push(target.clone());
        } else {
            panic!("{name}: volume {volume} is neither a ConfigMap nor a Secret");
        }
        mounts.push((path.to_owned(), target));
    }
    let relocate = |text: &str, quote: &str| {
        let mut text = text.to_owned();
        for (path, target) in &mounts {
            text = text.replace(
                &format!("{quote}{path}/"),
                &format!("{quote}{}/", target.display()),
            );
        }
        text
    };
    let mut config = None;
    for (file, text) in &config_files {
        std::fs::write(file, relocate(text, "\"")).unwrap();
    }
    // A placeholder for every file the configs read from a Secret.
    for (_, text) in &config_files {
        let text = relocate(text, "\"");
        for secret_dir in &secret_mounts {
            let prefix = format!("\"{}/", secret_dir.display());
            for (i, _) in text.match_indices(&prefix) {
                let rest = &text[i + prefix.len()..];
                let key = &rest[..rest.find('"').unwrap()];
                std::fs::write(secret_dir.join(key), "placeholder-secret\n").unwrap();
            }
        }
    }

    let mut args: Vec<String> = strings(&container["args"])
        .iter()
        .map(|a| relocate(&format!(" {a}"), " ")[1..].to_owned())
        .collect();
    if let Some(i) = args.iter().position(|a| a == "--config") {
        let original = strings(&container["args"])[i + 1].clone();
        config = config_files
            .iter()
            .find(|(file, _)| file == Path::new(&args[i + 1]))
            .map(|(_, text)| text.clone());
        assert!(
            config.is_some(),
            "{name}: {original} is in no mounted ConfigMap"
        );
    }
    let shown_args = strings(&container["args"]);
    args.push(
        if args[0] == "topics" {
            "--dry-run"
        } else {
            "--check-config"
        }
        .into(),
    );

    // Environment.
    let mut command = support::seatwatch();
    command.args(&args).env_clear();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let reference = from
            .get("configMapRef")
            .unwrap_or_else(|| panic!("{name}: envFrom other than a ConfigMap: {from}"));
        let source = find(docs, "ConfigMap", reference["name"].as_str().unwrap());
        for (key, value) in source["data"].as_object().unwrap() {
            command.env(key, value.as_str().unwrap());
        }
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let key = env["name"].as_str().unwrap();
        if let Some(value) = env.get("value") {
            command.env(key, value.as_str().unwrap());
        } else if let Some(reference) = env["valueFrom"].get("configMapKeyRef") {
            let source = find(docs, "ConfigMap", reference["name"].as_str().unwrap());
            command.env(
                key,
                source["data"][reference["key"].as_str().unwrap()]
                    .as_str()
                    .unwrap(),
            );
        } else if env["valueFrom"].get("secretKeyRef").is_some() {
            command.env(key, "placeholder-secret");
        } else {
            panic!("{name}: env {key} comes from neither a value, a ConfigMap nor a Secret");
        }
    }
    let output = command.output().unwrap();
    assert_success(&format!("{name}: seatwatch {}", args.join(" ")), &output);
    Checked {
        args: shown_args,
        stdout: String::from_utf8(output.stdout).unwrap(),
        config,
    }
}

/// Checks every container of every workload; returns what seatwatch said, by workload.
fn check_workloads(docs: &[Json]) -> BTreeMap<String, Checked> {
    let mut checked = BTreeMap::new();
    for (workload, pod) in workloads(docs) {
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{workload}");
        assert!(pod["initContainers"].is_null(), "{workload}");
        checked.insert(
            workload.clone(),
            check_container(docs, &workload, pod, &containers[0]),
        );
    }
    checked
}

/// The orgs `ingest … --check-config` understood: "ingest config OK: orgs a, b; …".
fn ingest_orgs(stdout: &str) -> Vec<String> {
    let orgs = stdout
        .split_once("orgs ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(orgs, _)| orgs)
        .unwrap_or_else(|| panic!("no orgs in {stdout:?}"));
    orgs.split(", ").map(str::to_owned).collect()
}

#[test]
fn every_kubernetes_command_is_accepted_by_seatwatch() {
    let docs = base();
    let checked = check_workloads(&docs);
    let subcommands: BTreeSet<&str> = checked.values().map(|c| c.args[0].as_str()).collect();
    assert_eq!(
        subcommands,
        BTreeSet::from(["alert", "ingest", "topics", "transform"])
    );
    let ingest = checked.values().find(|c| c.args[0] == "ingest").unwrap();
    assert_eq!(ingest.args[..2], ["ingest", "run"]);
    assert_eq!(ingest_orgs(&ingest.stdout), ["example-org"]);
    // The topics Job creates what the services expect: same brokers and prefix.
    let topics = checked.values().find(|c| c.args[0] == "topics").unwrap();
    assert!(
        topics.stdout.contains("salesforce.usage.raw"),
        "{}",
        topics.stdout
    );

    match kubectl_kustomize(ORG_GROUPS) {
        Some(overlay) => {
            let checked = check_workloads(&overlay);
            assert_eq!(checked.len(), 5, "{:?}", checked.keys());
        }
        None => eprintln!("kubectl not available: the org-groups overlay was not rendered"),
    }
}

#[test]
fn the_tests_own_rendering_of_the_base_agrees_with_kubectl() {
    let own = render_own(&repo().join(BASE));
    let Some(kubectl) = kubectl_kustomize(BASE) else {
        return;
    };
    // kubectl appends a content hash to generated ConfigMaps' names, and to references.
    let plain: BTreeSet<String> = of_kind(&own, "ConfigMap")
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let hashed: Vec<(String, String)> = of_kind(&kubectl, "ConfigMap")
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .map(|name| {
            let (base, hash) = name.rsplit_once('-').unwrap();
            assert!(plain.contains(base) && hash.len() == 10, "{name}");
            (format!("\"{name}\""), format!("\"{base}\""))
        })
        .collect();
    let unhash = |value: &Json| -> Json {
        let mut text = serde_json::to_string(value).unwrap();
        for (name, base) in &hashed {
            text = text.replace(name, base);
        }
        serde_json::from_str(&text).unwrap()
    };
    let by_name = |docs: Vec<Json>| -> BTreeMap<String, Json> {
        docs.into_iter().map(|d| (kind_name(&d), d)).collect()
    };
    let own = by_name(own);
    let kubectl = by_name(kubectl.iter().map(unhash).collect());
    assert_eq!(
        own.keys().collect::<Vec<_>>(),
        kubectl.keys().collect::<Vec<_>>()
    );
    for (name, doc) in &own {
        assert_eq!(doc, &kubectl[name], "{name} differs");
    }
}

/// Writes documents as one multi-document YAML file (JSON is YAML).
fn write_documents(path: &Path, docs: &[Json]) {
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap())
        .collect();
    std::fs::write(path, text.join("\n---\n")).unwrap();
}

#[test]
fn kubernetes_manifests_pass_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![(dir.path().join("base.yaml"), base())];
    match kubectl_kustomize(ORG_GROUPS) {
        Some(docs) => files.push((dir.path().join("org-groups.yaml"), docs)),
        None => eprintln!("kubectl not available: the org-groups overlay was not rendered"),
    }
    files.push((
        dir.path().join("example-secret.yaml"),
        yaml_documents(&read(EXAMPLE_SECRET)),
    ));
    let expected: usize = files.iter().map(|(_, docs)| docs.len()).sum();
    for (path, docs) in &files {
        write_documents(path, docs);
    }

    for version in [OLDEST_KUBERNETES, "latest"] {
        let mut args = vec!["--strict"];
        if version != "latest" {
            args.extend(["--kubernetes-version", version]);
        }
        let paths: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let Some(output) = tool(
            "kubernetes-validate",
            &args,
            "scripts/test.sh installs it from PyPI",
        ) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_success(&format!("kubernetes-validate ({version})"), &output);
        // An unknown kind or API version is only a warning to the tool: not here.
        for line in stdout.lines() {
            assert!(
                line.starts_with("INFO"),
                "kubernetes-validate ({version}): {line}"
            );
        }
        let passed = stdout.matches(" passed for resource ").count();
        assert_eq!(
            passed, expected,
            "kubernetes-validate ({version}):\n{stdout}"
        );
    }
}

/// `USER uid:gid` of the Dockerfile's runtime stage.
fn image_uid() -> i64 {
    read("Dockerfile")
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.trim().parse().ok())
        .expect("the Dockerfile names a numeric USER")
}

/// Renderings to check the rules on: the base, and the overlay when kubectl is there.
fn renderings() -> Vec<(&'static str, Vec<Json>)> {
    let mut all = vec![(BASE, base())];
    if let Some(overlay) = kubectl_kustomize(ORG_GROUPS) {
        all.push((ORG_GROUPS, overlay));
    }
    all
}

#[test]
fn kubernetes_workloads_run_locked_down() {
    let uid = image_uid();
    for (rendering, docs) in renderings() {
        let mut images = BTreeSet::new();
        for (workload, pod) in workloads(&docs) {
            let at = format!("{rendering}: {workload}");
            let security = &pod["securityContext"];
            assert_eq!(security["runAsNonRoot"], true, "{at}");
            assert_eq!(security["runAsUser"], uid, "{at}: the image's user");
            assert_eq!(security["runAsGroup"], uid, "{at}");
            assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{at}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{at}");
            assert!(
                pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
                "{at}"
            );
            for container in pod["containers"].as_array().unwrap() {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{at}");
                assert!(security["capabilities"]["add"].is_null(), "{at}");
                assert!(security["privileged"] != true, "{at}");
                let resources = &container["resources"];
                for (kind, what) in [
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "memory"),
                ] {
                    assert!(resources[kind][what].is_string(), "{at}: no {kind}.{what}");
                }
                images.insert(container["image"].as_str().unwrap().to_owned());
                // No secret value in the manifests: secret-looking variables come from
                // Secrets.
                for env in container["env"].as_array().into_iter().flatten() {
                    let key = env["name"].as_str().unwrap().to_ascii_uppercase();
                    if ["SECRET", "PASSWORD", "TOKEN", "KEY"]
                        .iter()
                        .any(|s| key.contains(s))
                    {
                        assert!(env["value"].is_null(), "{at}: {key} has a literal value");
                    }
                }
            }
        }
        assert_eq!(
            images.len(),
            1,
            "{rendering}: one image for everything: {images:?}"
        );
        assert!(
            images.iter().all(|i| i.starts_with("seatwatch:")),
            "{images:?}"
        );
        assert!(
            of_kind(&docs, "Secret").is_empty(),
            "{rendering} defines a Secret; reference Secrets, never define them"
        );
    }
}

#[test]
fn kubernetes_services_probe_drain_and_get_scraped_on_their_ops_port() {
    let drain = seatwatch_common::shutdown::DRAIN_DEADLINE.as_secs() as i64;
    for (rendering, docs) in renderings() {
        let mut seen = BTreeSet::new();
        for deployment in of_kind(&docs, "Deployment") {
            let at = format!("{rendering}: {}", kind_name(deployment));
            let template = &deployment["spec"]["template"];
            let pod = &template["spec"];
            let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
            assert!(
                grace > drain,
                "{at}: grace period {grace}s, drain takes up to {drain}s"
            );

            let container = &pod["containers"][0];
            let service = strings(&container["args"])[0].clone();
            let (_, port) = PORTS
                .iter()
                .find(|(s, _)| *s == service)
                .unwrap_or_else(|| panic!("{at}: unexpected service {service}"));
            seen.insert(service.clone());

            // The TOML listens on all interfaces at the port the pod declares.
            let config_map = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|v| v["configMap"]["name"].as_str())
                .unwrap();
            let data = &find(&docs, "ConfigMap", config_map)["data"];
            let toml = data[format!("{service}.toml")].as_str().unwrap();
            assert_eq!(toml_listen_addr(toml), format!("0.0.0.0:{port}"), "{at}");
            let ports = container["ports"].as_array().unwrap();
            assert_eq!(ports.len(), 1, "{at}");
            assert_eq!(ports[0]["containerPort"], *port, "{at}");
            let port_name = &ports[0]["name"];

            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{at}: {probe}");
                assert!(
                    get["port"] == *port_name || get["port"] == *port,
                    "{at}: {probe}"
                );
            }

            let annotations = &template["metadata"]["annotations"];
            assert_eq!(annotations["prometheus.io/scrape"], "true", "{at}");
            assert_eq!(annotations["prometheus.io/port"], port.to_string(), "{at}");
            assert_eq!(annotations["prometheus.io/path"], "/metrics", "{at}");
        }
        assert_eq!(
            seen,
            BTreeSet::from(PORTS.map(|(s, _)| s.to_owned())),
            "{rendering}"
        );

        let jobs = of_kind(&docs, "Job");
        assert_eq!(jobs.len(), 1, "{rendering}: one topics Job");
        let pod = &jobs[0]["spec"]["template"]["spec"];
        assert_eq!(strings(&pod["containers"][0]["args"]), ["topics", "create"]);
        assert!(["Never", "OnFailure"].contains(&pod["restartPolicy"].as_str().unwrap()));
    }
}

fn selects(selector: &Json, labels: &Json) -> bool {
    let wanted = selector["matchLabels"].as_object().unwrap();
    assert!(selector["matchExpressions"].is_null());
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

/// `SEATWATCH_KAFKA__PARTITIONS` of the ConfigMap the topics Job reads.
fn topic_partitions(docs: &[Json]) -> i64 {
    let job = of_kind(docs, "Job")[0];
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let name = container["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .unwrap();
    find(docs, "ConfigMap", name)["data"]["SEATWATCH_KAFKA__PARTITIONS"]
        .as_str()
        .expect("the Kafka ConfigMap sets SEATWATCH_KAFKA__PARTITIONS")
        .parse()
        .unwrap()
}

#[test]
fn kubernetes_scaling_stays_within_partitions_and_budgets() {
    for (rendering, docs) in renderings() {
        let partitions = topic_partitions(&docs);
        let deployments = of_kind(&docs, "Deployment");
        let service_of =
            |d: &Json| strings(&d["spec"]["template"]["spec"]["containers"][0]["args"])[0].clone();

        // Autoscalers: transform and alert, never beyond the partition count.
        let mut scaled = BTreeSet::new();
        for hpa in of_kind(&docs, "HorizontalPodAutoscaler") {
            let at = format!("{rendering}: {}", kind_name(hpa));
            let target = &hpa["spec"]["scaleTargetRef"];
            assert_eq!(target["kind"], "Deployment", "{at}");
            let deployment = find(&docs, "Deployment", target["name"].as_str().unwrap());
            let max = hpa["spec"]["maxReplicas"].as_i64().unwrap();
            assert!(
                max <= partitions,
                "{at}: maxReplicas {max} above the {partitions} partitions"
            );
            assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 1, "{at}");
            assert!(
                deployment["spec"]["replicas"].is_null(),
                "{at}: the autoscaler owns the replica count"
            );
            scaled.insert(service_of(deployment));
        }
        assert_eq!(
            scaled,
            BTreeSet::from(["alert".to_owned(), "transform".to_owned()]),
            "{rendering}"
        );

        for deployment in &deployments {
            let at = format!("{rendering}: {}", kind_name(deployment));
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            assert!(selects(&deployment["spec"]["selector"], labels), "{at}");
            // ingest: one replica per org group, never two side by side.
            if service_of(deployment) == "ingest" {
                assert_eq!(deployment["spec"]["replicas"], 1, "{at}");
                assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "{at}");
            }
            // No Deployment's selector takes another's pods.
            for other in &deployments {
                if other["metadata"]["name"] != deployment["metadata"]["name"] {
                    let theirs = &other["spec"]["template"]["metadata"]["labels"];
                    assert!(!selects(&deployment["spec"]["selector"], theirs), "{at}");
                }
            }
            // Exactly one budget covers it, and it covers nothing else.
            let budgets: Vec<&Json> = of_kind(&docs, "PodDisruptionBudget")
                .into_iter()
                .filter(|b| selects(&b["spec"]["selector"], labels))
                .collect();
            assert_eq!(budgets.len(), 1, "{at}: {} budgets", budgets.len());
            let budget = &budgets[0]["spec"];
            assert!(
                budget["maxUnavailable"] == 1 || budget["minAvailable"].is_number(),
                "{at}"
            );
            let covered = deployments
                .iter()
                .filter(|d| {
                    selects(
                        &budgets[0]["spec"]["selector"],
                        &d["spec"]["template"]["metadata"]["labels"],
                    )
                })
                .count();
            assert_eq!(covered, 1, "{at}: its budget covers {covered} Deployments");
        }
    }
}

/// The files a TOML reads from under `dir`: `{ file = "DIR/NAME" }` → NAME.
fn secret_files_under(toml: &str, dir: &str) -> BTreeSet<String> {
    let prefix = format!("\"{dir}/");
    toml.match_indices(&prefix)
        .map(|(i, _)| {
            let rest = &toml[i + prefix.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[test]
fn secrets_are_referenced_and_the_example_secret_matches_them() {
    // The example is an example: placeholders, said so, and in no kustomization.
    let text = read(EXAMPLE_SECRET);
    assert!(text.contains("EXAMPLE ONLY"));
    let example = &yaml_documents(&text)[0];
    assert_eq!(example["kind"], "Secret");
    let values = example["stringData"].as_object().unwrap();
    assert!(values
        .values()
        .all(|v| v.as_str().unwrap().starts_with("PLACEHOLDER")));
    fn kustomizations(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                kustomizations(&path, found);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    kustomizations(&repo().join("deploy/kubernetes"), &mut found);
    assert!(found.len() >= 7, "{found:?}");
    for path in &found {
        let kustomization: Json =
            serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(
            kustomization["secretGenerator"].is_null(),
            "{} generates a Secret",
            path.display()
        );
        let listed = [&kustomization["resources"], &kustomization["patches"]];
        for entry in listed.iter().filter_map(|l| l.as_array()).flatten() {
            let entry = entry
                .as_str()
                .or(entry["path"].as_str())
                .unwrap_or_default();
            assert!(
                !entry.contains("examples"),
                "{} lists {entry}",
                path.display()
            );
        }
    }

    // Its keys are exactly the files base ingest reads from the Secret it mounts.
    let docs = base();
    let deployment = find(&docs, "Deployment", "seatwatch-ingest");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("ingest mounts a Secret");
    assert_eq!(volume["secret"]["secretName"], example["metadata"]["name"]);
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    let toml = read("deploy/kubernetes/base/ingest/ingest.toml");
    let read_by_ingest = secret_files_under(&toml, mount["mountPath"].as_str().unwrap());
    let keys: BTreeSet<String> = values.keys().cloned().collect();
    assert_eq!(read_by_ingest, keys);
    assert_eq!(
        read_by_ingest.len(),
        3,
        "consumer secret, password, security token"
    );
}

#[test]
fn org_groups_poll_every_org_exactly_once() {
    // Each group's ingest.toml, checked inside the base's ingest Deployment.
    let groups_dir = repo().join(ORG_GROUPS);
    let mut groups: Vec<(String, String)> = std::fs::read_dir(&groups_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("ingest.toml").exists())
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (
                name,
                std::fs::read_to_string(p.join("ingest.toml")).unwrap(),
            )
        })
        .collect();
    groups.sort();
    assert!(groups.len() >= 2, "{groups:?}");

    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (group, toml) in &groups {
        let mut docs = render_own(&repo().join(BASE));
        let config_map = docs
            .iter_mut()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "seatwatch-ingest")
            .unwrap();
        config_map["data"]["ingest.toml"] = Json::String(toml.clone());
        let deployment = find(&docs, "Deployment", "seatwatch-ingest");
        let pod = &deployment["spec"]["template"]["spec"];
        let checked = check_container(&docs, group, pod, &pod["containers"][0]);
        let orgs = ingest_orgs(&checked.stdout);
        assert!(!orgs.is_empty());
        for org in orgs {
            if let Some(other) = owner.insert(org.clone(), group.clone()) {
                panic!("org {org} is in {other} and in {group}: it would be polled twice");
            }
        }
    }

    // The rendered overlay: one ingest Deployment per group, each with its own config
    // and Secret, and no ingest of the base over all orgs.
    let Some(docs) = kubectl_kustomize(ORG_GROUPS) else {
        return;
    };
    let checked = check_workloads(&docs);
    let mut rendered: BTreeMap<String, String> = BTreeMap::new();
    let mut secrets = BTreeSet::new();
    for (workload, result) in &checked {
        if result.args[0] != "ingest" {
            continue;
        }
        assert_ne!(workload, "Deployment/seatwatch-ingest");
        let config = result.config.as_ref().unwrap();
        assert!(groups.iter().any(|(_, toml)| toml == config), "{workload}");
        for org in ingest_orgs(&result.stdout) {
            assert!(
                rendered.insert(org.clone(), workload.clone()).is_none(),
                "{org} twice"
            );
        }
        let deployment = find(
            &docs,
            "Deployment",
            workload.trim_start_matches("Deployment/"),
        );
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
        {
            if let Some(name) = volume["secret"]["secretName"].as_str() {
                assert!(
                    secrets.insert(name.to_owned()),
                    "{name} shared by two groups"
                );
            }
        }
    }
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        owner.keys().collect::<Vec<_>>()
    );
    assert_eq!(secrets.len(), groups.len());
}
