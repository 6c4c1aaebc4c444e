//! The gRPC ImageService.

use tonic::{Request, Response, Status};

use crate::proto;
use crate::proto::image_service_server::ImageService;
use crate::service::CriService;
use crate::streams::{chunked, Chunks};

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        req: Request<proto::ListImagesRequest>,
    ) -> R<proto::ListImagesResponse> {
        let images = CriService::list_images(self, req.into_inner().filter).await?;
        Ok(Response::new(proto::ListImagesResponse { images }))
    }

    type StreamImagesStream = Chunks<proto::StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<proto::StreamImagesRequest>,
    ) -> R<Self::StreamImagesStream> {
        let items = CriService::list_images(self, req.into_inner().filter).await?;
        Ok(Response::new(chunked(items, |images| {
            proto::StreamImagesResponse { images }
        })))
    }

    async fn image_status(
        &self,
        req: Request<proto::ImageStatusRequest>,
    ) -> R<proto::ImageStatusResponse> {
        let r = req.into_inner();
        Ok(Response::new(
            CriService::image_status(self, r.image, r.verbose).await?,
        ))
    }

    async fn pull_image(
        &self,
        req: Request<proto::PullImageRequest>,
    ) -> R<proto::PullImageResponse> {
        // Answer DeadlineExceeded ourselves, a little before tonic's own
        // grpc-timeout handling would answer Cancelled (clients such as
        // critest expect DeadlineExceeded, as containerd answers).
        let deadline = grpc_timeout(req.metadata()).map(|d| d.mul_f64(0.9));
        let r = req.into_inner();
        let pull = CriService::pull_image(self, r.image, r.auth);
        let image_ref = match deadline {
            Some(d) => tokio::time::timeout(d, pull)
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("PullImage: deadline exceeded"))??,
            None => pull.await?,
        };
        Ok(Response::new(proto::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<proto::RemoveImageRequest>,
    ) -> R<proto::RemoveImageResponse> {
        CriService::remove_image(self, req.into_inner().image).await?;
        Ok(Response::new(proto::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<proto::ImageFsInfoRequest>,
    ) -> R<proto::ImageFsInfoResponse> {
        Ok(Response::new(CriService::image_fs_info(self).await?))
    }
}

/// The request's `grpc-timeout` (`<digits><H|M|S|m|u|n>`), if any.
fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&md), None);
        for (v, d) in [
            ("1m", Duration::from_millis(1)),
            ("30S", Duration::from_secs(30)),
            ("2M", Duration::from_secs(120)),
        ] {
            md.insert("grpc-timeout", v.parse().unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(grpc_timeout(&md), Some(d));
        }
        md.insert(
            "grpc-timeout",
            "5x".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(grpc_timeout(&md), None);
    }
}
