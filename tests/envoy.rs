//! Envoy ext_authz `Check`, proven with a real Envoy 1.40 in front of an echo service and the
//! real broker as its authorization server: every case is a plain HTTP request through
//! Envoy, judged by the status, headers and body the client gets and by what the service
//! received (or that it received nothing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::{net::SocketAddr, path::Path};

use common::{
    Broker, authed, create_key, create_subject,
    envoy::{Echo, Envoy},
    introspect, mint, pb, shipped_policies, tools,
};
use reqwest::StatusCode;

/// Routes: `/orders` needs `read` on `alpha`; `/exchange` needs `read` and swaps the token
/// for one of audience `orders`; everything on `public.mesh.local` needs `read`, on
/// `admin.mesh.local` `admin`.
const ENVOY: &str = r#"{ routes = [
  { host = "orders.mesh.local", path_prefix = "/orders", permission = "read", project = "alpha" },
  { host = "orders.mesh.local", path_prefix = "/exchange", permission = "read", audience = "orders" },
  { host = "public.mesh.local", path_prefix = "/", permission = "read" },
  { host = "admin.mesh.local", path_prefix = "/", permission = "admin" },
] }"#;

/// An operator's narrowing: no DELETE through the mesh, and nothing under `/orders/admin`.
const MESH_POLICY: &str = r#"
@id("no-deletes")
forbid (principal, action == Action::"HttpRequest", resource)
when { context.method == "DELETE" };

@id("no-orders-admin")
forbid (principal, action == Action::"HttpRequest", resource)
when { context.path like "/orders/admin*" };

@id("bob-gets-no-orders-tokens")
forbid (principal == User::"bob", action == Action::"CreateAccessToken", resource)
when { context.audience == "orders" };
"#;

/// The broker with the routes and the operator policy, Envoy in front of an echo service.
struct Mesh {
    broker: Broker,
    envoy: Envoy,
    echo: Echo,
    admin: String,
    http: reqwest::Client,
    _policies: tempfile::TempDir,
}

impl Mesh {
    async fn start(envoy_bin: &Path) -> Self {
        let policies = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(shipped_policies()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), policies.path().join(entry.file_name())).unwrap();
        }
        std::fs::write(policies.path().join("mesh.cedar"), MESH_POLICY).unwrap();
        let data = tempfile::tempdir().unwrap().keep();
        let broker = Broker::start_in(
            &data,
            policies.path(),
            &[
                ("TOKEN_BROKER_AUDIENCES", r#"["orders"]"#),
                ("TOKEN_BROKER_ENVOY", ENVOY),
            ],
        )
        .await;
        let echo = Echo::start().await;
        let broker_addr: SocketAddr = broker.addr.parse().unwrap();
        let envoy = Envoy::start(envoy_bin, broker_addr, echo.addr).await;
        let admin = broker.admin_secret();
        Mesh {
            broker,
            envoy,
            echo,
            admin,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            _policies: policies,
        }
    }

    /// Sends `method host path` through Envoy with `headers`.
    async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.envoy.url))
            .header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status();
        let headers = reply.headers().clone();
        (status, headers, reply.text().await.unwrap())
    }

    /// GET with `authorization: Bearer <token>`.
    async fn get(
        &self,
        host: &str,
        path: &str,
        token: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        self.send(
            "GET",
            host,
            path,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
    }
}

/// The `reason` of a 403 or 401 JSON body.
fn reason(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("denial body is not JSON ({e}): {body}"));
    json["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason in {body}"))
        .to_owned()
}

fn assert_401(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str, why: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="token-broker", error="invalid_token""#),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_asks_the_broker_for_every_request() {
    let Some(envoy_bin) = tools::envoy() else {
        tools::skipped("envoy_asks_the_broker_for_every_request", "Envoy 1.40");
        return;
    };
    let mut mesh = Mesh::start(&envoy_bin).await;
    let b = &mesh.broker;
    create_subject(
        b,
        &mesh.admin,
        "alice",
        &["alpha", "beta"],
        &["read", "write"],
    )
    .await;
    create_subject(b, &mesh.admin, "bob", &["beta"], &["read"]).await;
    let alice_key = create_key(b, &mesh.admin, "alice", &["read", "write"]).await;
    let bob_key = create_key(b, &mesh.admin, "bob", &["read"]).await;
    let alice = mint(b, &alice_key, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap();
    let bob = mint(b, &bob_key, &[], &[], Some(1.0)).await.unwrap();

    // Allowed: the service sees who called, never the caller's token, and a value the
    // caller sent for an x-token header is replaced, not appended to.
    let (status, _, body) = mesh
        .send(
            "GET",
            "Orders.Mesh.Local:8080",
            "/orders/7?expand=1",
            &[
                ("authorization", &format!("Bearer {}", alice.access_token)),
                ("x-token-subject", "admin"),
                ("x-token-projects", "*"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = mesh.echo.last();
    assert_eq!(seen.path, "/orders/7?expand=1");
    assert_eq!(seen.header("x-token-subject"), Some("alice"));
    assert_eq!(seen.header("x-token-projects"), Some("alpha"));
    assert_eq!(seen.header("x-token-permissions"), Some("read"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the caller's token reached the service"
    );

    // 401, whatever the route, each with the RFC 6750 challenge.
    let forwarded = mesh.echo.seen().len();
    let (s, h, body) = mesh.send("GET", "orders.mesh.local", "/orders", &[]).await;
    assert_401(s, &h, &body, "no authorization header");
    let (s, h, body) = mesh
        .send(
            "GET",
            "orders.mesh.local",
            "/orders",
            &[("authorization", "Basic YWxpY2U6cHc=")],
        )
        .await;
    assert_401(s, &h, &body, "basic scheme");
    let (s, h, body) = mesh.get("orders.mesh.local", "/orders", "not-a-jwt").await;
    assert_401(s, &h, &body, "garbage");
    let (s, h, body) = mesh.get("orders.mesh.local", "/orders", &alice_key).await;
    assert_401(s, &h, &body, "access key secret");
    assert!(
        reason(&body).contains("access key is not accepted"),
        "{body}"
    );
    // A changed character in the middle of the signature (the last one may only touch
    // padding bits).
    let mut tampered = alice.access_token.clone().into_bytes();
    let middle = tampered.len() - 20;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (s, h, body) = mesh.get("orders.mesh.local", "/orders", &tampered).await;
    assert_401(s, &h, &body, "tampered signature");
    let nobody_host = mesh.get("nowhere.mesh.local", "/", "not-a-jwt").await;
    assert_401(
        nobody_host.0,
        &nobody_host.1,
        &nobody_host.2,
        "no route, bad token: 401 first",
    );
    // A token for another audience passes only on the route that exchanges to it.
    let orders_token = b
        .tokens()
        .await
        .create_access_token(authed(
            pb::CreateAccessTokenRequest {
                project_ids: vec!["alpha".into()],
                permissions: vec!["read".into()],
                expires_in_hours: Some(1.0),
                audience: "orders".into(),
            },
            &alice_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let (s, h, body) = mesh
        .get("orders.mesh.local", "/orders", &orders_token)
        .await;
    assert_401(s, &h, &body, "foreign audience");
    assert_eq!(
        mesh.echo.seen().len(),
        forwarded,
        "a 401 request reached the service"
    );

    // 403 with a JSON reason: the route's permission and project, then Cedar.
    let (s, h, body) = mesh
        .get("orders.mesh.local", "/orders", &bob.access_token)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(h.get("content-type").unwrap(), "application/json");
    assert!(reason(&body).contains("lacks project `alpha`"), "{body}");
    let (s, _, body) = mesh
        .get("admin.mesh.local", "/x", &alice.access_token)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(reason(&body).contains("lacks permission `admin`"), "{body}");
    let (s, _, body) = mesh
        .get("unknown.mesh.local", "/orders", &alice.access_token)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(reason(&body).contains("no route"), "{body}");
    // Paths a service might read as another path never pass: Envoy normalizes what it can
    // (the README's config), and the broker refuses what is left.
    for path in [
        "/orders/%61dmin",
        "/public/..;/orders/admin",
        "/orders/x/..;/admin",
    ] {
        let (s, _, body) = mesh
            .get("orders.mesh.local", path, &alice.access_token)
            .await;
        assert_ne!(s, StatusCode::OK, "{path}: {body}");
    }
    let (s, _, body) = mesh
        .get("orders.mesh.local", "/ordersx", &alice.access_token)
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "/ordersx is not under /orders: {body}"
    );
    assert!(reason(&body).contains("no route"), "{body}");
    let (s, _, body) = mesh
        .get(
            "orders.mesh.local",
            "/orders/admin/users",
            &alice.access_token,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(reason(&body).contains("no-orders-admin"), "{body}");
    // The query string is not part of the path policy sees.
    let (s, _, body) = mesh
        .get(
            "orders.mesh.local",
            "/orders/admin?to=/orders/ok",
            &alice.access_token,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _, body) = mesh
        .send(
            "DELETE",
            "orders.mesh.local",
            "/orders/7",
            &[("authorization", &format!("Bearer {}", alice.access_token))],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(reason(&body).contains("no-deletes"), "{body}");
    assert_eq!(
        mesh.echo.seen().len(),
        forwarded,
        "a 403 request reached the service"
    );

    // Token exchange: the service gets a new token of the route's audience, minted from the
    // caller's; the same one again while at least half its life is left.
    let (s, _, body) = mesh
        .get("orders.mesh.local", "/exchange/a", &alice.access_token)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let exchanged = mesh
        .echo
        .last()
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert_ne!(exchanged, alice.access_token);
    let seen = introspect(b, &alice_key, &exchanged).await;
    assert!(seen.active);
    assert_eq!(seen.audience, "orders");
    let caller = introspect(b, &alice_key, &alice.access_token).await;
    assert_eq!(seen.parent, caller.jti);
    assert_eq!(seen.depth, caller.depth + 1);
    assert_eq!(seen.permissions, ["read"]);
    assert_eq!(seen.project_ids, ["alpha"]);
    let (s, _, _) = mesh
        .get("orders.mesh.local", "/exchange/b", &alice.access_token)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        mesh.echo
            .last()
            .header("authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap(),
        exchanged,
        "the exchanged token is reused"
    );
    let caller_exp = caller.expires_at.as_ref().unwrap().seconds;
    let exchanged_exp = seen.expires_at.as_ref().unwrap().seconds;
    let exchanged_iat = seen.issued_at.as_ref().unwrap().seconds;
    assert_eq!(
        exchanged_exp - exchanged_iat,
        300,
        "exchange_lifetime is 5 minutes"
    );
    assert!(exchanged_exp < caller_exp);
    // A caller with less than `exchange_lifetime` left gets a token ending with it, exactly.
    let brief = mint(b, &alice_key, &[], &["read"], Some(61.0 / 3600.0))
        .await
        .unwrap();
    let (s, _, body) = mesh
        .get("orders.mesh.local", "/exchange/a", &brief.access_token)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let short_exchange = mesh.echo.last().header("authorization").unwrap()[7..].to_owned();
    assert_eq!(
        introspect(b, &alice_key, &short_exchange).await.expires_at,
        introspect(b, &alice_key, &brief.access_token)
            .await
            .expires_at
    );
    // The exchange is a mint: a policy refusing that mint refuses the request.
    let (s, _, body) = mesh
        .get("orders.mesh.local", "/exchange/a", &bob.access_token)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        reason(&body).contains("bob-gets-no-orders-tokens"),
        "{body}"
    );
    // The exchanged token itself is accepted on its own route.
    let (s, _, body) = mesh
        .get("orders.mesh.local", "/exchange/c", &exchanged)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // Past half its life, the kept token is replaced by a new one.
    b.advance_clock(151);
    let (s, _, _) = mesh
        .get("orders.mesh.local", "/exchange/b", &alice.access_token)
        .await;
    assert_eq!(s, StatusCode::OK);
    let renewed = mesh.echo.last().header("authorization").unwrap()[7..].to_owned();
    assert_ne!(
        renewed, exchanged,
        "a token past half its life is not reused"
    );

    // An exchange the mint rules refuse: a token at the maximum delegation depth (5).
    let mut deep = alice.access_token.clone();
    for _ in 0..5 {
        deep = mint(b, &deep, &[], &[], None).await.unwrap().access_token;
    }
    let (s, _, body) = mesh.get("orders.mesh.local", "/exchange/a", &deep).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(reason(&body).contains("exchange is refused"), "{body}");

    // Revocation: refused at once, and the exchanged token dies with its parent.
    let (s, _, _) = mesh
        .get("public.mesh.local", "/x", &alice.access_token)
        .await;
    assert_eq!(s, StatusCode::OK);
    b.tokens()
        .await
        .revoke_access_token(authed(
            pb::RevokeAccessTokenRequest {
                token: alice.access_token.clone(),
                jti: String::new(),
            },
            &alice_key,
        ))
        .await
        .unwrap();
    let (s, h, body) = mesh
        .get("public.mesh.local", "/x", &alice.access_token)
        .await;
    assert_401(s, &h, &body, "revoked");
    assert!(!introspect(b, &alice_key, &exchanged).await.active);

    // Expiry is exact: a token is accepted until its `exp`, refused from it.
    let short = mint(b, &alice_key, &[], &["read"], Some(0.5))
        .await
        .unwrap();
    let (s, _, _) = mesh
        .get("public.mesh.local", "/x", &short.access_token)
        .await;
    assert_eq!(s, StatusCode::OK);
    b.advance_clock(1800);
    let (s, h, body) = mesh
        .get("public.mesh.local", "/x", &short.access_token)
        .await;
    assert_401(s, &h, &body, "expired");

    // Every decision is logged like an RPC, never with a token.
    let logs = b.logs();
    assert!(
        logs.contains("method=\"Check\"") || logs.contains("method=Check"),
        "no Check in the logs"
    );
    assert!(
        !logs.contains(&alice.access_token) && !logs.contains(&exchanged),
        "a token was logged"
    );

    // The broker gone: Envoy denies and forwards nothing.
    let fresh = mint(b, &bob_key, &[], &[], Some(1.0)).await.unwrap();
    let forwarded = mesh.echo.seen().len();
    mesh.broker.kill9();
    let (s, _, _) = mesh
        .get("public.mesh.local", "/x", &fresh.access_token)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        mesh.echo.seen().len(),
        forwarded,
        "forwarded without a decision"
    );
}
