//! Routing fails closed: every method the server serves has an authorization entry (a
//! `Route` in `api::ROUTES`, or one of the explicitly public services), and a path without one is refused by
//! the auth layer before any handler sees it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use prost::Message;
use token_broker::{
    api::{
        self,
        auth::{AuthLayer, is_public_service},
    },
    broker::{Broker, MasterKeySource},
    config::Config,
};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

/// Every `/package.Service/Method` path of the descriptor sets the server registers, and
/// Envoy's ext_authz `Check` (served from `envoy-types`, which ships no descriptor set).
fn served_paths() -> Vec<String> {
    let mut paths = vec!["/envoy.service.auth.v3.Authorization/Check".to_owned()];
    for set in [
        token_broker::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
}

#[test]
fn every_served_method_has_an_entry() {
    let paths = served_paths();
    assert!(paths.len() > 20, "{paths:?}");
    for path in &paths {
        assert!(
            api::route(path).is_some() || is_public_service(path),
            "{path} is served but has no authorization entry"
        );
    }
    // Reflection is served too, and public by name.
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        assert!(is_public_service(path), "{path}");
    }
}

/// Every route names a path the server serves, once, and a Cedar action the schema knows:
/// an action missing from the schema would deny every call of the route.
#[tokio::test]
async fn every_route_is_served_once_and_its_action_is_in_the_schema() {
    let served = served_paths();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        ..Config::default()
    };
    let broker = Broker::open(config, MasterKeySource::File).await.unwrap();
    let anyone = token_broker::policy::EntityDesc::broker();
    for (i, route) in api::ROUTES.iter().enumerate() {
        assert!(
            served.iter().any(|p| p == route.path),
            "{route:?} is not served"
        );
        assert!(
            api::ROUTES[..i].iter().all(|r| r.path != route.path),
            "{} has two routes",
            route.path
        );
        let decision = broker.policy().authorize_uncached(
            route.action,
            &anyone,
            &anyone,
            &token_broker::policy::Record::new(),
        );
        assert!(
            !decision
                .errors
                .iter()
                .any(|e| e.contains("is not in the schema")),
            "{}: {:?}",
            route.action,
            decision.errors
        );
    }
    // The negative control: an unknown action is reported as such.
    let unknown = broker.policy().authorize_uncached(
        "NoSuchAction",
        &anyone,
        &anyone,
        &token_broker::policy::Record::new(),
    );
    assert!(
        unknown
            .errors
            .iter()
            .any(|e| e.contains("is not in the schema")),
        "{:?}",
        unknown.errors
    );
}

#[tokio::test]
async fn a_path_without_an_entry_is_refused_before_routing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        ..Config::default()
    };
    let broker = Broker::open(config, MasterKeySource::File).await.unwrap();
    // A service "registered" behind the layer that would answer anything it is routed.
    let reached = Arc::new(AtomicBool::new(false));
    let inner = {
        let reached = Arc::clone(&reached);
        tower::service_fn(move |_request: http::Request<Body>| {
            reached.store(true, Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty())) }
        })
    };
    let mut guarded = AuthLayer::new(broker).layer(inner);
    for path in [
        "/envoy.service.auth.v2.Authorization/Check",
        "/tokenbroker.v1.TokenService/NoSuchMethod",
        "/tokenbroker.v1.PolicyService/ReloadPolicies",
        "/grpc.health.v1.Health",
        "/",
    ] {
        let request = http::Request::builder()
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .unwrap();
        let response = guarded.ready().await.unwrap().call(request).await.unwrap();
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(status, "12", "{path}: UNIMPLEMENTED expected");
        assert!(
            !reached.load(Ordering::SeqCst),
            "{path} reached the service"
        );
    }
    // A public service passes through to its handler.
    let request = http::Request::builder()
        .uri("http://localhost/grpc.health.v1.Health/Check")
        .body(Body::empty())
        .unwrap();
    guarded.ready().await.unwrap().call(request).await.unwrap();
    assert!(reached.load(Ordering::SeqCst));
}
