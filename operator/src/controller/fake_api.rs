//! A tiny in-memory Kubernetes API behind `tower_test::mock::pair`, enough for
//! the reconcilers: GET/LIST, server-side apply (as a deep merge), status
//! apply, JSON patch of finalizers, create, replace and delete. Every request
//! is recorded so tests can assert what the operator did and never did.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub body: String,
}

#[derive(Default)]
pub struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    requests: Mutex<Vec<Recorded>>,
    version: Mutex<u64>,
}

/// Where a request points: `{api}/namespaces/{ns}/{resource}/{name}/{sub}`.
#[derive(Debug)]
struct Target {
    api: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse(path: &str) -> Target {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api, rest) = if segs[0] == "api" {
        (format!("/api/{}", segs[1]), &segs[2..])
    } else {
        (format!("/apis/{}/{}", segs[1], segs[2]), &segs[3..])
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    Target {
        api,
        namespace,
        resource: rest[0].to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    }
}

fn key(api: &str, namespace: &str, resource: &str, name: &str) -> String {
    format!("{api}/namespaces/{namespace}/{resource}/{name}")
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": if code.is_success() { "Success" } else { "Failure" },
            "reason": reason, "message": message, "code": code.as_u16(),
        }),
    )
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

impl FakeApi {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeApi::default())
    }

    /// A client whose every request this fake answers.
    pub fn client(self: &Arc<Self>) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let (code, value) = fake.answer(&parts, &bytes);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    pub fn put<T: Serialize>(&self, path: &str, obj: &T) {
        let mut value = serde_json::to_value(obj).unwrap();
        self.stamp(&mut value);
        self.objects.lock().unwrap().insert(path.to_string(), value);
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        let objects = self.objects.lock().unwrap();
        objects
            .get(path)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    /// Every object stored directly under `collection` (a list path).
    pub fn all<T: DeserializeOwned>(&self, collection: &str) -> Vec<T> {
        let prefix = format!("{}/", collection.trim_end_matches('/'));
        let objects = self.objects.lock().unwrap();
        objects
            .iter()
            .filter(|(path, _)| {
                path.strip_prefix(&prefix)
                    .is_some_and(|name| !name.contains('/'))
            })
            .map(|(_, v)| serde_json::from_value(v.clone()).unwrap())
            .collect()
    }

    pub fn remove(&self, path: &str) {
        self.objects.lock().unwrap().remove(path);
    }

    pub fn exists(&self, path: &str) -> bool {
        self.objects.lock().unwrap().contains_key(path)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// `METHOD path` of every request, in order.
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// The events published so far: (reason, note).
    pub fn events(&self) -> Vec<(String, String)> {
        self.requests()
            .iter()
            .filter(|r| r.path.contains("/events"))
            .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn stamp(&self, value: &mut Value) {
        let mut version = self.version.lock().unwrap();
        *version += 1;
        let meta = &mut value["metadata"];
        meta["resourceVersion"] = json!(version.to_string());
        if meta.get("uid").is_none_or(Value::is_null) {
            meta["uid"] = json!(format!("uid-{version}"));
        }
    }

    fn answer(&self, parts: &http::request::Parts, body: &[u8]) -> (StatusCode, Value) {
        let path = parts.uri.path().to_string();
        let body_text = String::from_utf8_lossy(body).to_string();
        self.requests.lock().unwrap().push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            body: body_text,
        });
        let target = parse(&path);
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut objects = self.objects.lock().unwrap();
        match (&parts.method, &target.name) {
            (&Method::GET, Some(_)) => match objects.get(&path) {
                Some(obj) => (StatusCode::OK, obj.clone()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{path} not found"),
                ),
            },
            (&Method::GET, None) => {
                let prefix = target
                    .namespace
                    .as_ref()
                    .map(|ns| format!("{}/namespaces/{ns}/{}/", target.api, target.resource));
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| match &prefix {
                        Some(p) => k.starts_with(p),
                        None => {
                            let t = parse(k);
                            t.api == target.api && t.resource == target.resource
                        }
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (&Method::POST, None) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let k = key(
                    &target.api,
                    target.namespace.as_deref().unwrap_or_default(),
                    &target.resource,
                    name,
                );
                if objects.contains_key(&k) {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                let mut obj = body.clone();
                self.stamp(&mut obj);
                objects.insert(k, obj.clone());
                (StatusCode::CREATED, obj)
            }
            (&Method::PUT, Some(_)) => {
                let Some(current) = objects.get(&path) else {
                    return status(StatusCode::NOT_FOUND, "NotFound", "not found");
                };
                if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    );
                }
                let mut obj = body.clone();
                self.stamp(&mut obj);
                objects.insert(path, obj.clone());
                (StatusCode::OK, obj)
            }
            (&Method::DELETE, Some(_)) => match objects.remove(&path) {
                Some(_) => status(StatusCode::OK, "", "deleted"),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{path} not found"),
                ),
            },
            (&Method::PATCH, Some(name)) => {
                let k = key(
                    &target.api,
                    target.namespace.as_deref().unwrap_or_default(),
                    &target.resource,
                    name,
                );
                if target.sub.as_deref() == Some("status") {
                    let Some(obj) = objects.get_mut(&k) else {
                        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
                    };
                    obj["status"] = body["status"].clone();
                    let mut obj = obj.clone();
                    self.stamp(&mut obj);
                    objects.insert(k, obj.clone());
                    return (StatusCode::OK, obj);
                }
                let mut obj = if content_type.contains("apply-patch") {
                    let mut obj = objects.get(&k).cloned().unwrap_or_else(|| json!({}));
                    // Server-side apply, approximated: the applied data replaces
                    // the old, metadata merges.
                    if let Some(data) = body.get("data") {
                        obj["data"] = data.clone();
                    }
                    merge(&mut obj, &body);
                    obj
                } else if content_type.contains("json-patch") {
                    let Some(mut obj) = objects.get(&k).cloned() else {
                        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
                    };
                    for op in body.as_array().cloned().unwrap_or_default() {
                        json_patch_op(&mut obj, &op);
                    }
                    obj
                } else {
                    let Some(mut obj) = objects.get(&k).cloned() else {
                        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
                    };
                    merge(&mut obj, &body);
                    obj
                };
                self.stamp(&mut obj);
                objects.insert(k, obj.clone());
                (StatusCode::OK, obj)
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "unsupported",
            ),
        }
    }
}

/// `add` and `remove` on a JSON pointer (`test` is assumed to pass).
fn json_patch_op(obj: &mut Value, op: &Value) {
    let path = op["path"].as_str().unwrap_or_default();
    let mut segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = segs.pop().unwrap_or_default();
    let mut parent = &mut *obj;
    for s in segs {
        parent = &mut parent[s];
    }
    match op["op"].as_str() {
        Some("add") => match parent {
            Value::Array(items) if last == "-" => items.push(op["value"].clone()),
            Value::Array(items) => items.insert(last.parse().unwrap(), op["value"].clone()),
            other => other[last] = op["value"].clone(),
        },
        Some("remove") => match parent {
            Value::Array(items) => {
                items.remove(last.parse().unwrap());
            }
            Value::Object(map) => {
                map.remove(last);
            }
            _ => {}
        },
        _ => {}
    }
}
