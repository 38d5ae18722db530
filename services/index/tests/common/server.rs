//! The index service in-process on 127.0.0.1:0 with a temporary data root, and a client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pumas_proto::common::v1::{ImportMode, ModelFilter};
use pumas_proto::index::v1::index_service_client::IndexServiceClient;
use pumas_proto::index::v1::*;
use pumas_runtime::Shutdown;
use tonic::transport::Channel;

/// A running in-process index service.
pub struct Server {
    pub client: IndexServiceClient<Channel>,
    pub stop: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), pumas_index::Error>>,
    pub root: PathBuf,
}

impl Server {
    pub async fn start(root: &Path, config: pumas_index::Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Shutdown::new();
        let config = pumas_index::Config {
            data_root: Some(root.to_owned()),
            ..config
        };
        let task = tokio::spawn(pumas_index::serve(listener, config, stop.wait()));
        let channel = loop {
            match Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        // Wait until the library is open (GetServiceInfo answers).
        let mut client = IndexServiceClient::new(channel);
        for _ in 0..200 {
            if client.get_service_info(GetServiceInfoRequest {}).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            client,
            stop,
            task,
            root: root.to_owned(),
        }
    }

    pub async fn stop(self) {
        self.stop.trigger();
        self.task.await.expect("join").expect("served");
    }

    pub fn models(&self) -> PathBuf {
        self.root.join("shared-resources/models")
    }

    /// Imports and waits for the job to end; returns the final job.
    pub async fn import(&mut self, paths: &[&Path], mode: ImportMode) -> Job {
        let request = ImportModelsRequest {
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            mode: mode as i32,
            ..Default::default()
        };
        let job = self
            .client
            .import_models(request)
            .await
            .expect("import accepted")
            .into_inner()
            .job
            .expect("job");
        self.wait(&job.status.expect("status").job_id).await
    }

    pub async fn wait(&mut self, job_id: &str) -> Job {
        let mut stream = self
            .client
            .watch_job(WatchJobRequest {
                job_id: job_id.to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        let mut last = None;
        while let Some(update) = stream.message().await.expect("stream") {
            last = update.job;
        }
        last.expect("at least one update")
    }

    pub async fn get(&mut self, id: &str) -> pumas_proto::common::v1::ModelRecord {
        self.client
            .get_model(GetModelRequest {
                model_id: id.to_owned(),
                include_chat_template: false,
                include_preview: false,
            })
            .await
            .expect("get")
            .into_inner()
            .model
            .expect("model")
    }

    pub async fn search(
        &mut self,
        query: &str,
        filter: Option<ModelFilter>,
        page_size: i32,
        token: &str,
    ) -> Result<SearchModelsResponse, tonic::Status> {
        self.client
            .search_models(SearchModelsRequest {
                query: query.to_owned(),
                filter,
                page_size,
                page_token: token.to_owned(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }
}
