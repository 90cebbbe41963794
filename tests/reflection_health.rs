//! grpcurl's view of the server: reflection (v1 and v1alpha) lists every service, and health
//! answers SERVING overall and per service.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::*;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SERVICES: [&str; 4] = [
    "tokenbroker.v1.UpstreamService",
    "tokenbroker.v1.TokenService",
    "tokenbroker.v1.SubjectService",
    "tokenbroker.v1.AccessKeyService",
];

#[tokio::test]
async fn reflection_lists_every_service_in_both_versions() {
    let b = Broker::start().await;
    // Each reflection version lists the application services, health, and itself.
    let expected = |reflection: &'static str| -> Vec<&'static str> {
        SERVICES
            .iter()
            .copied()
            .chain(["grpc.health.v1.Health", reflection])
            .collect()
    };

    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(b.channel().await);
        let requests = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "grpc.health.v1.Health".into(),
                )),
            },
        ];
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in &expected("grpc.reflection.v1.ServerReflection") {
            assert!(
                names.iter().any(|n| n == name),
                "v1 lacks {name}: {names:?}"
            );
        }
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("health is not described");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(b.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in &expected("grpc.reflection.v1alpha.ServerReflection") {
            assert!(
                names.iter().any(|n| n == name),
                "v1alpha lacks {name}: {names:?}"
            );
        }
    }
}

#[tokio::test]
async fn health_is_serving_overall_and_per_service() {
    let b = Broker::start().await;
    let mut health = HealthClient::new(b.channel().await);
    for service in std::iter::once("").chain(SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}
