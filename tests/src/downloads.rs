//! Downloads through the gateway, as tests drive them: start one, read it, wait for a state.

use std::time::Duration;

use crate::Channel;
use anyhow::{Context as _, bail};
use pumas_proto::fetch::v1::{Download, DownloadState};
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{GetDownloadRequest, StartDownloadRequest};

type Client = ModelLibraryServiceClient<Channel>;

/// Starts a download and answers its id.
pub async fn start_download(client: &mut Client, request: StartDownloadRequest) -> anyhow::Result<String> {
    let answer = client.start_download(request).await?.into_inner();
    Ok(answer.download.context("no download in the answer")?.download_id)
}

/// The download as the gateway reports it.
pub async fn get_download(client: &mut Client, id: &str) -> anyhow::Result<Download> {
    client
        .get_download(GetDownloadRequest {
            download_id: id.to_owned(),
        })
        .await?
        .into_inner()
        .download
        .context("no download in the answer")
}

/// Polls until the download is in `want`; fails the test when it ends in another final state
/// or `timeout` passes, with the state and error it has.
pub async fn wait_for_download(
    client: &mut Client,
    id: &str,
    want: DownloadState,
    timeout: Duration,
) -> anyhow::Result<Download> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let download = get_download(client, id).await?;
        if download.state == want as i32 {
            return Ok(download);
        }
        let finished = [
            DownloadState::Completed,
            DownloadState::Failed,
            DownloadState::Cancelled,
        ]
        .iter()
        .any(|s| *s as i32 == download.state);
        if finished || tokio::time::Instant::now() > deadline {
            bail!(
                "download {id} is {:?}, not {want:?} (waited up to {timeout:?}): {:?}",
                DownloadState::try_from(download.state),
                download.error
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
