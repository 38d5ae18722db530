//! RPCs that are in the contract but not built yet answer UNIMPLEMENTED with a message that names
//! the capability that brings them, never a fake success.

/// Writes a `#[tonic::async_trait]` impl of a tonic service trait: the methods given in the body,
/// plus one method per `not_built` entry that answers `UNIMPLEMENTED` naming `capability`.
///
/// The not-built methods are generated here, not by a nested macro call, because `async_trait`
/// must see every method already expanded.
///
/// ```ignore
/// pumas_runtime::service_impl! {
///     impl IndexService for IndexApi {
///         type WatchJobStream = BoxStream<WatchJobResponse>;
///         async fn get_service_info(&self, ...) -> ... { ... }
///     }
///     not_built(SERVICE_NAME, CAPABILITY) {
///         list_models "ListModels" (ListModelsRequest) -> ListModelsResponse;
///         watch_job "WatchJob" (WatchJobRequest) -> Self::WatchJobStream;
///     }
/// }
/// ```
#[macro_export]
macro_rules! service_impl {
    (
        impl $trait:ident for $ty:ident { $($body:tt)* }
        $(
            not_built($service:expr, $capability:expr) {
                $( $method:ident $rpc:literal ($req:ty) -> $resp:ty; )*
            }
        )*
    ) => {
        #[$crate::__tonic::async_trait]
        impl $trait for $ty {
            $($body)*
            $($(
                async fn $method(
                    &self,
                    _request: $crate::__tonic::Request<$req>,
                ) -> ::std::result::Result<$crate::__tonic::Response<$resp>, $crate::__tonic::Status> {
                    Err($crate::ApiError::not_implemented(format!("{}/{}", $service, $rpc), $capability).into())
                }
            )*)*
        }
    };
}

/// A boxed server stream, the associated stream type of every streaming RPC.
pub type BoxStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
