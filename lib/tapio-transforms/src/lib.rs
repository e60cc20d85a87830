//! Transforms (L2 intelligence): what turns a stream of facts into stories. One module per
//! config `type`; [`TransformConfig`] is the registry the topology matches on.

pub mod correlate;
pub mod impact_assess;
mod in_place;
pub mod semantic_enrich;

use serde::Deserialize;
use tapio_event::{BuildContext, ComponentError, Transform};

/// Every transform type, as written in `tapio.toml` (`type = "..."`). Deserialized externally
/// tagged (`{ <type> = { options } }`): the topology moves `type` there so that errors keep
/// their line numbers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransformConfig {
    SemanticEnrich(semantic_enrich::SemanticEnrichConfig),
    Correlate(correlate::CorrelateConfig),
    ImpactAssess(impact_assess::ImpactAssessConfig),
}

/// The `type` names of [`TransformConfig`], for error messages and docs.
pub const TRANSFORM_TYPES: &[&str] = &["correlate", "impact_assess", "semantic_enrich"];

impl TransformConfig {
    /// The config `type` of this transform.
    pub fn type_name(&self) -> &'static str {
        match self {
            TransformConfig::SemanticEnrich(_) => "semantic_enrich",
            TransformConfig::Correlate(_) => "correlate",
            TransformConfig::ImpactAssess(_) => "impact_assess",
        }
    }

    /// Builds the running transform; errors say what is wrong (exit 69).
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        match self {
            TransformConfig::SemanticEnrich(config) => config.build(cx),
            TransformConfig::Correlate(config) => config.build(cx),
            TransformConfig::ImpactAssess(config) => config.build(cx),
        }
    }
}
