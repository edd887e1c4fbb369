//! The client library's cron calls (`CronService`), with the same failover and retries as jobs.
//! Every change is safe to retry: creating the same spec again is done, deleting, suspending and
//! resuming are idempotent or fail NOT_FOUND; only `trigger` creates a job per call.

use tonic::Status;

use super::Client;
use crate::api::pb::cron_service_client::CronServiceClient;
use crate::api::{pb, Channel, MAX_MESSAGE_BYTES};

fn crons(c: Channel) -> CronServiceClient<Channel> {
    CronServiceClient::new(c).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// Which `CronService` call changes a cron by name.
#[derive(Clone, Copy, Debug)]
pub enum CronChange {
    Delete,
    Suspend,
    Resume,
}

impl Client {
    pub async fn create_cron(&self, req: pb::CreateCronRequest) -> Result<pb::Cron, Status> {
        let r = self.call(|c| {
            let req = req.clone();
            async move { crons(c).create_cron(req).await }
        });
        r.await?.cron.ok_or_else(|| Status::internal("empty CreateCron response"))
    }

    pub async fn list_crons(&self, stale: bool) -> Result<Vec<pb::Cron>, Status> {
        let consistency = super::consistency(stale);
        let r = self.call(|c| async move {
            crons(c).list_crons(pb::ListCronsRequest { consistency }).await
        });
        Ok(r.await?.crons)
    }

    pub async fn get_cron(&self, name: &str, stale: bool) -> Result<pb::Cron, Status> {
        let req =
            pb::GetCronRequest { name: name.to_string(), consistency: super::consistency(stale) };
        let r = self.call(|c| {
            let req = req.clone();
            async move { crons(c).get_cron(req).await }
        });
        r.await?.cron.ok_or_else(|| Status::internal("empty GetCron response"))
    }

    /// Deletes, suspends or resumes cron `name`; the cron afterwards (none once deleted).
    pub async fn change_cron(
        &self,
        name: &str,
        change: CronChange,
    ) -> Result<Option<pb::Cron>, Status> {
        let req = pb::CronNameRequest { name: name.to_string(), ..Default::default() };
        let r = self.call(|c| {
            let req = req.clone();
            async move {
                let mut c = crons(c);
                match change {
                    CronChange::Delete => c.delete_cron(req).await,
                    CronChange::Suspend => c.suspend_cron(req).await,
                    CronChange::Resume => c.resume_cron(req).await,
                }
            }
        });
        Ok(r.await?.cron)
    }

    /// Fires cron `name` now; the id of the job it created. The job's id is chosen here, once,
    /// so that the retries of this call create one job.
    pub async fn trigger_cron(&self, name: &str) -> Result<String, Status> {
        let req = pb::CronNameRequest {
            name: name.to_string(),
            trigger_job_id: uuid::Uuid::new_v4().to_string(),
        };
        let r = self.call(|c| {
            let req = req.clone();
            async move { crons(c).trigger_cron(req).await }
        });
        Ok(r.await?.job_id)
    }
}
