//! API errors as ECS words them: HTTP 400 with
//! `{"__type": "...Exception", "message": "..."}`, 403 for
//! authentication and permissions, 413 for a body too large, ServerException
//! 500.

use std::fmt;

use crate::model::FieldError;
use crate::store::StoreError;

/// ECS's exception names that skiff answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kind {
    Client,
    InvalidParameter,
    ClusterNotFound,
    ClusterContainsTasks,
    ResourceNotFound,
    ServiceNotFound,
    ServiceNotActive,
    ServiceDeploymentNotFound,
    Conflict,
    TargetNotFound,
    AttributeLimitExceeded,
    ResourceAlreadyExists,
    ResourceInUse,
    ClusterContainsServices,
    UnsupportedFeature,
    MissingAuthenticationToken,
    IncompleteSignature,
    UnrecognizedClient,
    InvalidSignature,
    AccessDenied,
    RequestTooLarge,
    Throttling,
    Validation,
    ObjectNotFound,
    InvalidNextToken,
    /// Cloud Map's errors (their codes have no `Exception` suffix).
    CloudMapInvalidInput,
    NamespaceNotFound,
    NamespaceAlreadyExists,
    OperationNotFound,
    CloudMapResourceInUse,
    CloudMapTooManyTags,
    /// ECS's, for a Service Connect namespace it cannot find.
    EcsNamespaceNotFound,
    Server,
}

impl Kind {
    /// The `__type` value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Client => "ClientException",
            Kind::InvalidParameter => "InvalidParameterException",
            Kind::ClusterNotFound => "ClusterNotFoundException",
            Kind::ClusterContainsTasks => "ClusterContainsTasksException",
            Kind::ResourceNotFound => "ResourceNotFoundException",
            Kind::ServiceNotFound => "ServiceNotFoundException",
            Kind::ServiceNotActive => "ServiceNotActiveException",
            Kind::ServiceDeploymentNotFound => "ServiceDeploymentNotFoundException",
            Kind::Conflict => "ConflictException",
            Kind::TargetNotFound => "TargetNotFoundException",
            Kind::AttributeLimitExceeded => "AttributeLimitExceededException",
            Kind::ResourceAlreadyExists => "ResourceAlreadyExistsException",
            Kind::ResourceInUse => "ResourceInUseException",
            Kind::ClusterContainsServices => "ClusterContainsServicesException",
            Kind::UnsupportedFeature => "UnsupportedFeatureException",
            Kind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Kind::IncompleteSignature => "IncompleteSignatureException",
            Kind::UnrecognizedClient => "UnrecognizedClientException",
            Kind::InvalidSignature => "InvalidSignatureException",
            Kind::AccessDenied => "AccessDeniedException",
            Kind::RequestTooLarge => "RequestEntityTooLargeException",
            Kind::Throttling => "ThrottlingException",
            Kind::Validation => "ValidationException",
            Kind::ObjectNotFound => "ObjectNotFoundException",
            Kind::InvalidNextToken => "InvalidNextTokenException",
            Kind::CloudMapInvalidInput => "InvalidInput",
            Kind::NamespaceNotFound => "NamespaceNotFound",
            Kind::NamespaceAlreadyExists => "NamespaceAlreadyExists",
            Kind::OperationNotFound => "OperationNotFound",
            Kind::CloudMapResourceInUse => "ResourceInUse",
            Kind::CloudMapTooManyTags => "TooManyTagsException",
            Kind::EcsNamespaceNotFound => "NamespaceNotFoundException",
            Kind::Server => "ServerException",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Kind::Server => 500,
            Kind::MissingAuthenticationToken
            | Kind::IncompleteSignature
            | Kind::UnrecognizedClient
            | Kind::InvalidSignature
            | Kind::AccessDenied => 403,
            Kind::RequestTooLarge => 413,
            Kind::Throttling => 429,
            _ => 400,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Which exception.
    pub kind: Kind,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// `ClientException`: the request is wrong.
    pub fn client(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Client, message)
    }

    /// `InvalidParameterException`: a parameter is wrong.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::InvalidParameter, message)
    }

    /// `ClusterNotFoundException` naming the cluster.
    pub fn cluster_not_found(name: &str) -> ApiError {
        ApiError::new(
            Kind::ClusterNotFound,
            format!(
                "Cluster not found: {name:?}; create it with CreateCluster or name another cluster"
            ),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "__type": self.kind.name(), "message": self.message })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::client(e.to_string())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> ApiError {
        use crate::auth::AuthError as A;
        let kind = match e {
            A::Missing => Kind::MissingAuthenticationToken,
            A::Incomplete(_) => Kind::IncompleteSignature,
            A::UnknownKey => Kind::UnrecognizedClient,
            A::Invalid(_) => Kind::InvalidSignature,
        };
        ApiError::new(kind, e.message())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(Kind::Server, e.to_string())
    }
}

impl From<crate::store::records::ReadError> for ApiError {
    fn from(e: crate::store::records::ReadError) -> ApiError {
        ApiError::new(Kind::Server, e.to_string())
    }
}

impl From<crate::store::records::ClaimError> for ApiError {
    fn from(e: crate::store::records::ClaimError) -> ApiError {
        use crate::store::records::ClaimError;
        match e {
            ClaimError::Taken { .. } => ApiError::invalid(e.to_string()),
            ClaimError::Store(e) => e.into(),
        }
    }
}

/// The result of an action.
pub type ApiResult<T = serde_json::Value> = Result<T, ApiError>;
