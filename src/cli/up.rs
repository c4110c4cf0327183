//! `skiff up [APP]`: the engine and an app in one command. Starts the
//! engine in this process (the same options as `skiff server`), registers
//! the app's task definition, creates its service (or rolls the existing
//! one to the new revision), waits until it is stable, prints the URL it
//! answers on, and serves until Ctrl-C.
//!
//! APP is a task-definition JSON file, or a directory holding
//! `taskdef.json` and optionally `service.json` (CreateService's fields;
//! `serviceName` defaults to the family, `desiredCount` to 1). Relative
//! `image` and host volume paths are relative to the app's directory. Without APP,
//! `examples/hello` is deployed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::server::{Engine, Server, StopSignal};
use crate::api::error::ApiError;
use crate::model::arn::Scope;

/// Start the engine and deploy an app on it.
#[derive(clap::Args)]
pub struct Up {
    /// A task-definition JSON file, or a directory holding taskdef.json
    /// (and optionally service.json). Default: examples/hello.
    #[arg(value_name = "APP")]
    pub app: Option<PathBuf>,
    /// How long to wait for the service to become stable.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::units::parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub server: Server,
}

/// An app on disk: its task definition and service settings.
#[derive(Debug)]
pub struct App {
    /// The task definition, with image paths made absolute.
    pub taskdef: Value,
    /// CreateService's fields (without taskDefinition).
    pub service: Value,
}

/// What is wrong with an app's files: the file, and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AppError(String);

/// Why an app could not be deployed: which call refused it, and the
/// API's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}{error}")]
pub struct DeployError {
    /// Which step, in words (ending in ": ", or empty).
    what: &'static str,
    /// The API's answer.
    pub error: ApiError,
}

fn read_json(path: &Path) -> Result<Value, AppError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| AppError(format!("{} is not valid JSON: {e}", path.display())))
}

impl App {
    /// Reads the app at `path` (a file or a directory).
    pub fn load(path: &Path) -> Result<App, AppError> {
        let (taskdef_path, service_path) = if path.is_dir() {
            let t = path.join("taskdef.json");
            if !t.exists() {
                return Err(AppError(format!(
                    "{} has no taskdef.json: put the app's task definition there, or pass the file itself",
                    path.display()
                )));
            }
            (t, Some(path.join("service.json")).filter(|s| s.exists()))
        } else {
            (path.to_path_buf(), None)
        };
        let base = taskdef_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut taskdef = read_json(&taskdef_path)?;
        if !taskdef.is_object() {
            return Err(AppError(format!(
                "{} must hold a task definition (a JSON object)",
                taskdef_path.display()
            )));
        }
        if let Some(containers) = taskdef
            .get_mut("containerDefinitions")
            .and_then(Value::as_array_mut)
        {
            for c in containers {
                if let Some(image) = c
                    .get("image")
                    .and_then(Value::as_str)
                    .filter(|i| !crate::model::image::is_reference(i))
                {
                    let raw = image.strip_prefix("file://").unwrap_or(image);
                    if Path::new(raw).is_relative() {
                        let abs = std::path::absolute(base.join(raw))
                            .map_err(|e| AppError(format!("image {image}: {e}")))?;
                        c["image"] = json!(abs.to_string_lossy());
                    }
                }
            }
        }
        // Host volumes too are relative to the app.
        if let Some(volumes) = taskdef.get_mut("volumes").and_then(Value::as_array_mut) {
            for v in volumes {
                if let Some(p) = v.pointer("/host/sourcePath").and_then(Value::as_str) {
                    if Path::new(p).is_relative() {
                        let abs = std::path::absolute(base.join(p))
                            .map_err(|e| AppError(format!("volume {p}: {e}")))?;
                        v["host"]["sourcePath"] = json!(abs.to_string_lossy());
                    }
                }
            }
        }
        let service = match service_path {
            Some(p) => read_json(&p)?,
            None => json!({}),
        };
        if !service.is_object() {
            return Err(AppError(
                "service.json must hold CreateService's fields (a JSON object)".into(),
            ));
        }
        Ok(App { taskdef, service })
    }
}

/// Calls an action of the engine in process, off the async threads.
async fn call(
    engine: &Engine,
    action: fn(&crate::api::Api, &Scope, &Value) -> crate::api::error::ApiResult,
    req: Value,
) -> Result<Value, ApiError> {
    let api = engine.api.clone();
    let scope = Scope::new(api.default_region.clone(), api.account.clone());
    tokio::task::spawn_blocking(move || action(&api, &scope, &req))
        .await
        .unwrap_or_else(|_| Err(ApiError::client("the action failed unexpectedly")))
}

/// Registers the app and creates or updates its service; returns the
/// service's name and cluster.
pub async fn deploy(engine: &Engine, app: &App) -> Result<(String, String), DeployError> {
    use crate::api::{services, task_definitions};
    let registered = call(engine, task_definitions::register, app.taskdef.clone())
        .await
        .map_err(|error| DeployError {
            what: "the task definition was refused: ",
            error,
        })?;
    let td = &registered["taskDefinition"];
    let family = td["family"].as_str().unwrap_or_default().to_string();
    let reference = format!("{family}:{}", td["revision"]);
    let mut svc = app.service.clone();
    let name = svc
        .get("serviceName")
        .and_then(Value::as_str)
        .unwrap_or(&family)
        .to_string();
    let cluster = svc
        .get("cluster")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    svc["serviceName"] = json!(name);
    svc["taskDefinition"] = json!(reference);
    if svc.get("desiredCount").is_none() {
        svc["desiredCount"] = json!(1);
    }
    let existing = call(
        engine,
        services::describe,
        json!({"cluster": cluster, "services": [name]}),
    )
    .await
    .map_err(|error| DeployError { what: "", error })?;
    let active = existing["services"]
        .as_array()
        .and_then(|s| s.first())
        .is_some_and(|s| s["status"] == "ACTIVE");
    if active {
        call(
            engine,
            services::update,
            json!({"cluster": cluster, "service": name, "taskDefinition": reference,
                   "desiredCount": svc["desiredCount"]}),
        )
        .await
        .map_err(|error| DeployError {
            what: "the service could not be updated: ",
            error,
        })?;
        tracing::info!("rolling service {name} to {reference}");
    } else {
        call(engine, services::create, svc)
            .await
            .map_err(|error| DeployError {
                what: "the service could not be created: ",
                error,
            })?;
        tracing::info!("created service {name} running {reference}");
    }
    Ok((name, cluster))
}

impl Up {
    /// Runs `skiff up`; returns the process exit code.
    pub fn execute(self) -> i32 {
        crate::logging::init();
        super::run_async(self.run())
    }

    async fn run(self) -> Result<(), String> {
        let path = match &self.app {
            Some(p) => p.clone(),
            None => {
                let p = PathBuf::from("examples/hello");
                if !p.exists() {
                    return Err("no APP given and examples/hello is not here: run skiff up from the skiff checkout, or pass a task-definition file or an app directory".into());
                }
                p
            }
        };
        let app = App::load(&path).map_err(|e| e.to_string())?;
        let stop = StopSignal::listen();
        let engine = self.server.start().await.map_err(|e| e.to_string())?;
        let deployed = match deploy(&engine, &app).await {
            Ok(d) => d,
            Err(e) => {
                engine.stop().await;
                return Err(e.to_string());
            }
        };
        let (name, cluster) = &deployed;
        // The client commands' wait, over the engine's own API.
        let ep = super::client::Endpoint::new(format!("http://{}", engine.api_addr), cluster);
        let (service, limit) = (name.clone(), self.wait);
        let waited = tokio::task::spawn_blocking(move || {
            super::client::wait_service(&ep, &service, false, limit)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match waited {
            Ok(()) => {
                let port = engine.ingress_addr.port();
                let host = if cluster == "default" {
                    format!("{name}.{}", engine.domain)
                } else {
                    format!("{name}.{cluster}.{}", engine.domain)
                };
                println!("{name} is up: http://{host}:{port}/");
                println!(
                    "  (or: curl -H 'Host: {host}' http://{}/)",
                    engine.ingress_addr
                );
                println!("Ctrl-C stops it.");
            }
            Err(e) => tracing::error!("{e}; still serving: Ctrl-C stops it"),
        }
        stop.wait().await;
        engine.stop().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_host_volumes_are_relative_to_the_app() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("taskdef.json"),
            r#"{"family": "a", "containerDefinitions": [{"name": "w", "image": "w.wasm", "memory": 16},
                {"name": "x", "image": "/abs/x.wasm", "memory": 16},
                {"name": "y", "image": "127.0.0.1:5000/y:v1", "memory": 16}],
                "volumes": [{"name": "s", "host": {"sourcePath": "state"}}, {"name": "t"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("service.json"), r#"{"desiredCount": 3}"#).unwrap();
        let app = App::load(dir.path()).unwrap();
        let base = std::path::absolute(dir.path()).unwrap();
        assert_eq!(
            app.taskdef["containerDefinitions"][0]["image"],
            json!(base.join("w.wasm").to_string_lossy())
        );
        assert_eq!(
            app.taskdef["containerDefinitions"][1]["image"],
            "/abs/x.wasm"
        );
        // A registry reference is left as it is.
        assert_eq!(
            app.taskdef["containerDefinitions"][2]["image"],
            "127.0.0.1:5000/y:v1"
        );
        assert_eq!(
            app.taskdef["volumes"][0]["host"]["sourcePath"],
            json!(base.join("state").to_string_lossy())
        );
        assert_eq!(app.service["desiredCount"], 3);
        let missing = App::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
