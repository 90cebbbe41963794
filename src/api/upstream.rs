//! `UpstreamService`: vendor accounts and the vendor-native tokens leased from them. The
//! credential is accepted once and never returned; a vendor token is returned once.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::{Api, caller, from_layer, status::to_status, timestamp};
use crate::{
    broker::UpstreamPlan,
    error::Error,
    pb::{
        storage::UpstreamRecord,
        v1::{
            self, CreateUpstreamRequest, DeleteUpstreamRequest, DeleteUpstreamResponse,
            GetUpstreamRequest, IssueUpstreamTokenRequest, IssueUpstreamTokenResponse,
            ListUpstreamsRequest, ListUpstreamsResponse, RevokeUpstreamTokenRequest,
            RevokeUpstreamTokenResponse, UpdateUpstreamRequest, Upstream,
            upstream_service_server::UpstreamService,
        },
    },
    upstream::Credential,
};

fn credential(c: Option<v1::Credential>) -> Credential {
    let c = c.unwrap_or_default();
    Credential {
        username: c.username,
        password: c.password,
        token: c.token,
    }
}

impl Api {
    fn upstream_to_proto(&self, record: UpstreamRecord) -> Result<Upstream, Status> {
        let live_leases = self
            .broker
            .live_lease_count(&record.name)
            .map_err(to_status)?;
        Ok(Upstream {
            name: record.name,
            vendor: record.vendor,
            base_url: record.base_url,
            repo_host: record.repo_host,
            repo_user: record.repo_user,
            token_type: record.token_type,
            create_time: timestamp(record.create_time),
            update_time: timestamp(record.update_time),
            status: record.status,
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
        let req = request.into_inner();
        let record = self
            .broker
            .create_upstream(
                &req.name,
                req.vendor,
                &req.base_url,
                credential(req.credential),
                req.options.into_iter().collect::<BTreeMap<_, _>>(),
                self.broker.now(),
            )
            .await
            .map_err(to_status)?;
        tracing::info!(upstream = %record.name, status = record.status, "created upstream");
        Ok(Response::new(self.upstream_to_proto(record)?))
    }

    async fn get_upstream(
        &self,
        request: Request<GetUpstreamRequest>,
    ) -> Result<Response<Upstream>, Status> {
        let record = self
            .broker
            .get_upstream(&request.into_inner().name)
            .map_err(to_status)?;
        Ok(Response::new(self.upstream_to_proto(record)?))
    }

    async fn list_upstreams(
        &self,
        request: Request<ListUpstreamsRequest>,
    ) -> Result<Response<ListUpstreamsResponse>, Status> {
        let req = request.into_inner();
        let size = match req.page_size {
            0 => 25,
            n if (1..=1000).contains(&n) => n as usize,
            n => {
                return Err(to_status(Error::invalid(
                    "page_size",
                    format!("`{n}` is out of range: give 1 to 1000, or 0 for 25"),
                )));
            }
        };
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let mut records = self
            .broker
            .store
            .list_upstreams(after, size + 1)
            .map_err(|e| to_status(e.into()))?;
        let next_page_token = if records.len() > size {
            records.truncate(size);
            records.last().map(|r| r.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
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
        let req = request.into_inner();
        let record = self
            .broker
            .update_upstream(
                &req.name,
                req.credential.map(|c| credential(Some(c))),
                req.options.into_iter().collect(),
                self.broker.now(),
            )
            .await
            .map_err(to_status)?;
        tracing::info!(upstream = %record.name, status = record.status, "updated upstream");
        Ok(Response::new(self.upstream_to_proto(record)?))
    }

    async fn delete_upstream(
        &self,
        request: Request<DeleteUpstreamRequest>,
    ) -> Result<Response<DeleteUpstreamResponse>, Status> {
        let name = request.into_inner().name;
        let revoked_leases = self
            .broker
            .delete_upstream(&name, self.broker.now())
            .await
            .map_err(to_status)?;
        tracing::info!(upstream = %name, revoked_leases, "deleted upstream");
        Ok(Response::new(DeleteUpstreamResponse { revoked_leases }))
    }

    async fn issue_upstream_token(
        &self,
        request: Request<IssueUpstreamTokenRequest>,
    ) -> Result<Response<IssueUpstreamTokenResponse>, Status> {
        let caller = caller(&request)?;
        // The auth layer validated, attenuated and mapped the request for policy.
        let plan: UpstreamPlan = from_layer(&request)?;
        let now = self.broker.now();
        let issued = self
            .broker
            .issue_upstream_token(&caller, plan, now)
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
        let lease_id = request.into_inner().lease_id;
        let revoked_at_vendor = self
            .broker
            .revoke_upstream_token(&lease_id, self.broker.now())
            .await
            .map_err(to_status)?;
        tracing::info!(lease = %lease_id, revoked_at_vendor, "revoked upstream token");
        Ok(Response::new(RevokeUpstreamTokenResponse {
            revoked_at_vendor,
        }))
    }
}
