//! Transforms (L2 intelligence): what turns a stream of facts into stories. One module per
//! config `type`; [`TransformConfig`] is the registry the topology matches on.

pub mod anomaly;
pub mod correlate;
pub mod filter;
pub mod impact_assess;
pub mod rhai;
pub mod route;
pub mod semantic_enrich;
mod util;

pub use util::condition::Condition;

tapio_event::component_registry! {
    /// Every transform type, as written in `tapio.toml` (`type = "..."`). Deserialized
    /// externally tagged (`{ <type> = { options } }`): the topology moves `type` there so that
    /// errors keep their line numbers. A new transform is its module plus one line here.
    #[derive(schemars::JsonSchema)]
    pub enum TransformConfig: dyn tapio_event::Transform {
        "anomaly" => Anomaly(anomaly::AnomalyConfig),
        "correlate" => Correlate(correlate::CorrelateConfig),
        "filter" => Filter(filter::FilterConfig),
        "impact_assess" => ImpactAssess(impact_assess::ImpactAssessConfig),
        "rhai" => Rhai(rhai::RhaiConfig),
        "route" => Route(route::RouteConfig),
        "semantic_enrich" => SemanticEnrich(semantic_enrich::SemanticEnrichConfig),
    }
}
