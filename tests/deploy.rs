//! The deployment files agree with each other and with atgate: the ConfigMap's config
//! passes atgate's own validation, ports and probes point where atgate listens, every
//! file the config names is a key of the mounted Secret, selectors select the pods, and
//! the Secret's placeholders are refused at start. (Schemas are checked separately by
//! `kubernetes-validate` in `scripts/test`.)

use std::collections::HashMap;
use std::path::Path;

use atgate::config::{Config, SecretRef};
use serde_json::Value;

fn manifests() -> HashMap<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let name = doc["metadata"]["name"].as_str().map(str::to_owned).unwrap_or_default();
            out.insert(format!("{kind}/{name}"), doc);
        }
    }
    out
}

fn port(ports: &Value, name: &str) -> u64 {
    ports.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no port {name}"))
        ["containerPort"]
        .as_u64()
        .unwrap()
}

fn secret_key(secret: &Option<SecretRef>, mount: &str) -> String {
    let Some(SecretRef::File(file)) = secret else { panic!("expected a *_file secret") };
    let path = file.path.to_str().unwrap();
    path.strip_prefix(mount)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{path} not under {mount}"))
        .into()
}

#[test]
fn the_kubernetes_manifests_fit_together() {
    let m = manifests();
    let kustomization = &m["Kustomization/"];
    let listed: Vec<&str> =
        kustomization["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for file in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")).unwrap() {
        let name = file.unwrap().file_name().into_string().unwrap();
        assert!(name == "kustomization.yaml" || listed.contains(&name.as_str()), "{name} is not in kustomization.yaml");
    }

    let deploy = &m["Deployment/atgate"];
    let pod = &deploy["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(&deploy["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // The config is valid, and the pod serves where it listens.
    let config_map = &m["ConfigMap/atgate-config"];
    let text = config_map["data"]["atgate.yaml"].as_str().unwrap();
    let config = Config::parse(text, "configmap").unwrap_or_else(|e| panic!("ConfigMap config invalid:\n{e}"));
    let ports = &container["ports"];
    assert_eq!(config.listen[0].port() as u64, port(ports, "http"));
    assert_eq!(config.admin_listen.unwrap().port() as u64, port(ports, "admin"));
    assert!(config.listen[0].ip().is_unspecified() && config.admin_listen.unwrap().ip().is_unspecified());
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");

    // The config file is the mounted ConfigMap (a directory mount, so edits arrive).
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| {
        let m = mounts.iter().find(|v| v["name"] == volume).unwrap();
        assert!(m.get("subPath").is_none(), "subPath mounts never see updates");
        m["mountPath"].as_str().unwrap().to_owned()
    };
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["run", "--config", &format!("{}/atgate.yaml", mount_of("config"))]);
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["configMap"]["name"] == "atgate-config"));

    // Every secret the config reads is a key of the mounted Secret.
    let secrets_dir = mount_of("secrets");
    let secret = &m["Secret/atgate-secrets"];
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "atgate-secrets"));
    let redis_url = config.replay.redis_url.clone();
    for key in [
        secret_key(&config.dpop.nonce_secret, &secrets_dir),
        secret_key(&redis_url, &secrets_dir),
        secret_key(&config.assertion.keys, &secrets_dir),
    ] {
        assert!(secret["stringData"].get(&key).is_some(), "Secret has no {key}");
    }

    // Graceful shutdown fits in the grace period.
    let grace = pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
    assert!(config.limits.shutdown_timeout.as_secs() + pause < grace);

    // Selectors select the pods; the monitor scrapes the admin port.
    for key in ["Service/atgate", "PodDisruptionBudget/atgate"] {
        let selector = m[key]["spec"]["selector"].get("matchLabels").unwrap_or(&m[key]["spec"]["selector"]);
        assert_eq!(selector, labels, "{key}");
    }
    assert_eq!(
        m["ServiceMonitor/atgate"]["spec"]["selector"]["matchLabels"],
        m["Service/atgate"]["metadata"]["labels"]
    );
    let monitored = m["ServiceMonitor/atgate"]["spec"]["endpoints"][0]["port"].as_str().unwrap();
    let service_ports = m["Service/atgate"]["spec"]["ports"].as_array().unwrap();
    assert!(service_ports.iter().any(|p| p["name"] == monitored && p["targetPort"] == "admin"));
    let hpa = &m["HorizontalPodAutoscaler/atgate"]["spec"];
    assert_eq!(hpa["scaleTargetRef"]["name"], "atgate");
    assert_eq!(hpa["minReplicas"], 3);
    assert!(m["PodDisruptionBudget/atgate"]["spec"]["minAvailable"].as_u64().unwrap() < 3);

    // The Redis URL names the Redis Service.
    let url = secret["stringData"]["redis-url"].as_str().unwrap();
    let redis_port = m["Service/redis"]["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert!(url.starts_with(&format!("redis://redis:{redis_port}/")), "{url}");
    assert_eq!(m["NetworkPolicy/redis"]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"], *labels);
}

#[test]
fn the_unfilled_secret_is_refused_at_start_and_a_filled_one_is_not() {
    let m = manifests();
    let text = m["ConfigMap/atgate-config"]["data"]["atgate.yaml"].as_str().unwrap();
    let data = m["Secret/atgate-secrets"]["stringData"].as_object().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = text.replace("/etc/atgate/secrets", dir.path().to_str().unwrap());
    let write = |key: &str, value: &str| std::fs::write(dir.path().join(key), value).unwrap();
    for (key, value) in data {
        write(key, value.as_str().unwrap());
    }
    let build = || atgate::state::Runtime::build(Config::parse(&local, "configmap").unwrap()).map(|_| ());
    let err = build().unwrap_err().to_string();
    assert!(err.contains("nonce secret must be 64 hex characters"), "{err}");

    write("nonce-secret", &"ab".repeat(32));
    let err = build().unwrap_err().to_string();
    assert!(err.contains("keys are not JSON"), "{err}");

    let key = atgate::jose::sign::SigningKey::generate().private_jwk();
    write("assertion-keys.json", &serde_json::json!({ "keys": [key] }).to_string());
    build().unwrap();
}

#[test]
fn the_systemd_unit_runs_the_shipped_layout() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/atgate.service")).unwrap();
    let value = |key: &str| {
        unit.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).unwrap_or_else(|| panic!("no {key}="))
    };
    assert!(value("ExecStart").contains("run --config /etc/atgate/atgate.yaml"));
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(value("DynamicUser"), "yes");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("KillSignal"), "SIGTERM");
}
