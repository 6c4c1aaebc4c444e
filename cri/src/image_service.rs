//! The gRPC ImageService.

use tonic::{Request, Response, Status};

use crate::proto;
use crate::proto::image_service_server::ImageService;
use crate::service::CriService;

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
        let r = req.into_inner();
        let image_ref = CriService::pull_image(self, r.image, r.auth).await?;
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
