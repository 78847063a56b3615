//! `GET /v1/models` and `GET /v1/models/{model}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{OpenAiError, OpenAiState};

/// One entry of the model list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelObject {
    /// The model name clients put in `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds (when the router was built).
    pub created: u64,
    /// [`OpenAiRouteConfig::owned_by`](super::OpenAiRouteConfig::owned_by).
    pub owned_by: String,
}

/// The body of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
}

fn object(state: &OpenAiState, id: &str) -> ModelObject {
    ModelObject {
        id: id.to_owned(),
        object: "model".to_owned(),
        created: state.created,
        owned_by: state.config.owned_by.clone(),
    }
}

/// `GET /v1/models`: the configured models.
pub(super) async fn list(State(state): State<OpenAiState>) -> Json<ModelList> {
    let data = state
        .config
        .listed_models()
        .iter()
        .map(|id| object(&state, id))
        .collect();
    Json(ModelList {
        object: "list".to_owned(),
        data,
    })
}

/// `GET /v1/models/{model}`: one of them, or 404 `model_not_found`.
pub(super) async fn retrieve(
    State(state): State<OpenAiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelObject>, OpenAiError> {
    let Path(model) = path.map_err(|e| OpenAiError::invalid_request(e.body_text(), None))?;
    if state.config.listed_models().contains(&model) {
        Ok(Json(object(&state, &model)))
    } else {
        Err(OpenAiError::model_not_found(&model))
    }
}
