//! `UpstreamService`: vendor accounts and the vendor-native tokens leased from them. The
//! credential is accepted once and never returned; a vendor token is returned once.

use tonic::{Request, Response, Status};

use super::{Api, precise_timestamp, status::to_status, timestamp};
use crate::{
    authz::{self, Also, Described, Guarded, Route},
    broker::{Broker, Caller, Found, UpstreamPlan},
    error::Error,
    pb::{
        storage::{LeaseRecord, UpstreamRecord},
        v1::{
            CreateUpstreamRequest, DeleteUpstreamRequest, DeleteUpstreamResponse,
            GetUpstreamRequest, IssueUpstreamTokenRequest, IssueUpstreamTokenResponse,
            ListUpstreamsRequest, ListUpstreamsResponse, RevokeUpstreamTokenRequest,
            RevokeUpstreamTokenResponse, UpdateUpstreamRequest, Upstream,
            upstream_service_server::UpstreamService,
        },
    },
    policy::{Attr, EntityDesc, EntityKind, Record},
    upstream::Vendor,
};

impl Guarded for CreateUpstreamRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.UpstreamService/CreateUpstream",
        "CreateUpstream",
    );
    type Plan = Self;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        let resource = authz::upstream_entity(broker, &self.name)?;
        Ok(Described::authenticated(caller, now, resource, self))
    }
}

impl Guarded for GetUpstreamRequest {
    const ROUTE: Route = Route::new("/tokenbroker.v1.UpstreamService/GetUpstream", "GetUpstream");
    type Plan = Found<UpstreamRecord>;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let record = broker.store().upstream(&self.name)?;
        let resource = authz::upstream_desc(&self.name, record.as_ref());
        Ok(Described::authenticated(
            caller,
            now,
            resource,
            Found::new(self.name, record),
        ))
    }
}

impl Guarded for ListUpstreamsRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.UpstreamService/ListUpstreams",
        "ListUpstreams",
    );
    type Plan = Self;

    fn describe(
        self,
        _broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        Ok(Described::authenticated(
            caller,
            now,
            EntityDesc::broker(),
            self,
        ))
    }
}

impl Guarded for UpdateUpstreamRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.UpstreamService/UpdateUpstream",
        "UpdateUpstream",
    );
    type Plan = Self;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        let resource = authz::upstream_entity(broker, &self.name)?;
        Ok(Described::authenticated(caller, now, resource, self))
    }
}

impl Guarded for DeleteUpstreamRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.UpstreamService/DeleteUpstream",
        "DeleteUpstream",
    );
    /// The upstream's name.
    type Plan = String;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<String>, Error> {
        let resource = authz::upstream_entity(broker, &self.name)?;
        Ok(Described::authenticated(caller, now, resource, self.name))
    }
}

impl Guarded for IssueUpstreamTokenRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.UpstreamService/IssueUpstreamToken",
        "IssueUpstreamToken",
    );
    type Plan = UpstreamPlan;

    /// Attenuation and the permission mapping are checked first, with the same refusals as
    /// minting; policy then sees exactly what would be issued. A git password upstream hands
    /// out the stored password itself: that needs a policy that explicitly permits
    /// `ReadUpstreamSecret` (the shipped policies do not).
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<UpstreamPlan>, Error> {
        let plan = broker.upstreams.plan_upstream(
            caller,
            &self.upstream,
            &self.project_ids,
            &self.permissions,
            self.expires_in_hours,
            now,
        )?;
        let context = authz::authenticated_context(caller, now)
            .with("requested", authz::grant_attrs(broker.model(), &plan.grant))
            .with("lifetime_seconds", plan.lifetime_secs)
            .with(
                "vendor_permissions",
                Attr::strings(plan.vendor_permissions.iter().cloned()),
            );
        let resource = authz::upstream_desc(&self.upstream, Some(&plan.upstream));
        let also = (plan.vendor == Vendor::GitPassword).then(|| Also {
            action: "ReadUpstreamSecret",
            reason: "SECRET_READ_DENIED",
            message: format!(
                "upstream `{}` hands out a stored password: no policy permits `ReadUpstreamSecret` for {} (the shipped policies never do; an operator must add one)",
                resource.id,
                caller.view.principal.display()
            ),
        });
        Ok(Described {
            resource,
            context,
            plan,
            also,
        })
    }
}

impl Guarded for RevokeUpstreamTokenRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.UpstreamService/RevokeUpstreamToken",
        "RevokeUpstreamToken",
    );
    type Plan = Found<LeaseRecord>;

    /// The lease, with its holder's subject and its upstream; an unknown lease is described
    /// as the caller's own, so the core answers NOT_FOUND.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let lease = broker.store().lease(&self.lease_id)?;
        let (subject, upstream) = lease
            .as_ref()
            .map(|l| (l.subject.clone(), l.upstream.clone()))
            .unwrap_or_else(|| (caller.subject.id.clone(), String::new()));
        let resource = EntityDesc {
            kind: EntityKind::Lease,
            id: self.lease_id.clone(),
            attrs: Record::new()
                .with("subject", subject)
                .with("upstream", upstream),
        };
        Ok(Described::authenticated(
            caller,
            now,
            resource,
            Found::new(self.lease_id, lease),
        ))
    }
}

impl Api {
    fn upstream_to_proto(&self, record: UpstreamRecord) -> Result<Upstream, Status> {
        let live_leases = self
            .broker
            .upstreams
            .live_lease_count(&record.name)
            .map_err(to_status)?;
        let project_ids = crate::broker::upstream_projects(&record).to_ids();
        let status = crate::broker::status_at(&record, self.broker.now());
        let credential_expires_at = (record.credential_expires_at > 0)
            .then(|| timestamp(record.credential_expires_at))
            .flatten();
        Ok(Upstream {
            name: record.name,
            vendor: record.vendor,
            base_url: record.base_url,
            repo_host: record.repo_host,
            repo_user: record.repo_user,
            token_type: record.token_type,
            create_time: precise_timestamp(record.create_time, record.create_nanos),
            update_time: precise_timestamp(record.update_time, record.update_nanos),
            status,
            credential_expires_at,
            project_ids,
            options: record.options,
            live_leases,
        })
    }
}

#[tonic::async_trait]
impl UpstreamService for Api {
    async fn create_upstream(
        &self,
        request: Request<CreateUpstreamRequest>,
    ) -> Result<Response<Upstream>, Status> {
        let authorized = self.authorize(request)?;
        let record = self
            .broker
            .upstreams
            .create_upstream(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(upstream = %record.name, status = record.status, "created upstream");
        Ok(Response::new(self.upstream_to_proto(record)?))
    }

    async fn get_upstream(
        &self,
        request: Request<GetUpstreamRequest>,
    ) -> Result<Response<Upstream>, Status> {
        let authorized = self.authorize(request)?;
        let record = self
            .broker
            .upstreams
            .get_upstream(authorized)
            .map_err(to_status)?;
        Ok(Response::new(self.upstream_to_proto(record)?))
    }

    async fn list_upstreams(
        &self,
        request: Request<ListUpstreamsRequest>,
    ) -> Result<Response<ListUpstreamsResponse>, Status> {
        let authorized = self.authorize(request)?;
        let (records, next_page_token) = self
            .broker
            .upstreams
            .list_upstreams(authorized)
            .map_err(to_status)?;
        let upstreams = records
            .into_iter()
            .map(|r| self.upstream_to_proto(r))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(ListUpstreamsResponse {
            upstreams,
            next_page_token,
        }))
    }

    async fn update_upstream(
        &self,
        request: Request<UpdateUpstreamRequest>,
    ) -> Result<Response<Upstream>, Status> {
        let authorized = self.authorize(request)?;
        let record = self
            .broker
            .upstreams
            .update_upstream(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(upstream = %record.name, status = record.status, "updated upstream");
        Ok(Response::new(self.upstream_to_proto(record)?))
    }

    async fn delete_upstream(
        &self,
        request: Request<DeleteUpstreamRequest>,
    ) -> Result<Response<DeleteUpstreamResponse>, Status> {
        let authorized = self.authorize(request)?;
        let name = authorized.plan().clone();
        let revoked_leases = self
            .broker
            .upstreams
            .delete_upstream(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(upstream = %name, revoked_leases, "deleted upstream");
        Ok(Response::new(DeleteUpstreamResponse { revoked_leases }))
    }

    async fn issue_upstream_token(
        &self,
        request: Request<IssueUpstreamTokenRequest>,
    ) -> Result<Response<IssueUpstreamTokenResponse>, Status> {
        let authorized = self.authorize(request)?;
        let issued = self
            .broker
            .upstreams
            .issue_upstream_token(authorized)
            .await
            .map_err(to_status)?;
        let lease = issued.lease;
        tracing::info!(lease = %lease.id, upstream = %lease.upstream, "issued upstream token");
        Ok(Response::new(IssueUpstreamTokenResponse {
            token: issued.token.token.clone(),
            expires_at: timestamp(lease.expires_at),
            lease_id: lease.id,
            vendor_token_id: lease.vendor_token_id,
            vendor_permissions: lease.vendor_permissions,
            project_ids: lease.projects,
        }))
    }

    async fn revoke_upstream_token(
        &self,
        request: Request<RevokeUpstreamTokenRequest>,
    ) -> Result<Response<RevokeUpstreamTokenResponse>, Status> {
        let authorized = self.authorize(request)?;
        let lease_id = authorized.plan().id.clone();
        let revoked = self
            .broker
            .upstreams
            .revoke_upstream_token(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(lease = %lease_id, revoked_at_vendor = revoked.at_vendor, "revoked upstream token");
        Ok(Response::new(RevokeUpstreamTokenResponse {
            revoked_at_vendor: revoked.at_vendor,
            detail: revoked.detail,
        }))
    }
}
