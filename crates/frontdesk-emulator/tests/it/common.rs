use frontdesk_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

pub const SK: &str = "sk_test_it";

pub struct Ctx {
    pub emu: Emulator,
    pub running: RunningEmulator,
    pub http: Client,
}

pub async fn start_with(cfg: EmulatorConfig) -> Ctx {
    let emu = Emulator::new(cfg).unwrap();
    let running = emu.clone().spawn("127.0.0.1:0").await.unwrap();
    Ctx {
        emu,
        running,
        http: Client::new(),
    }
}

pub async fn start(users: usize) -> Ctx {
    start_with(EmulatorConfig {
        secret_key: SK.into(),
        users,
        ..Default::default()
    })
    .await
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    /// A request to the Backend API with the right bearer.
    pub fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(SK)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        read(self.api(Method::GET, path).send().await.unwrap()).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        read(self.api(method, path).json(&body).send().await.unwrap()).await
    }
}

/// Status and JSON body; asserts the exact `Content-Type` the JS SDK requires.
pub async fn read(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"), "status {status}");
    (status, res.json().await.unwrap())
}

/// Asserts a Clerk `ClerkErrors` body with `code`, and returns the first error.
pub fn clerk_error(body: &Value, code: &str) -> Value {
    let errs = body["errors"].as_array().expect("errors array");
    assert_eq!(errs.len(), 1, "{body}");
    let e = &errs[0];
    assert_eq!(e["code"], code, "{body}");
    assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(e["long_message"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        body["clerk_trace_id"]
            .as_str()
            .is_some_and(|s| s.len() == 32)
    );
    e.clone()
}

pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}
