//! Turns an event into the parts of a Kafka message: topic, key, headers and value. Kept apart
//! from delivery so that the routing rules (which key, which headers) are tested without a broker.

use tapio_event::codec::encode_json;
use tapio_event::template::Template;
use tapio_event::{EntityType, UnifiedEvent};

use super::config::Encoding;

/// The parsed templates of one sink.
#[derive(Debug, Clone)]
pub(super) struct Recipe {
    pub topic: Template,
    /// `None`: the entity's routing key.
    pub key: Option<Template>,
    pub headers: Vec<(String, Template)>,
    pub encoding: Encoding,
}

/// One message, ready to send (and to send again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub topic: String,
    /// `None`: no key, so librdkafka spreads the message over partitions.
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub value: Vec<u8>,
}

impl Recipe {
    /// The message for `event`, or the name of the field its topic template needs and the
    /// event lacks (such an event can never be sent: it goes to the dead-letter file).
    pub fn record(&self, event: &UnifiedEvent) -> Result<Record, String> {
        let mut topic = String::new();
        self.topic.render_into(event, &mut topic).map_err(|field| {
            format!("the topic template needs `{field}`, which the event lacks")
        })?;
        let key = match &self.key {
            Some(template) => {
                let mut key = String::new();
                template.render_into(event, &mut key).ok().map(|()| key)
            }
            None => routing_key(event),
        };
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, template) in &self.headers {
            let mut value = String::new();
            if template.render_into(event, &mut value).is_ok() {
                headers.push((name.clone(), value));
            }
        }
        if let Some(traceparent) = traceparent(event) {
            headers.push(("traceparent".to_owned(), traceparent));
        }
        let mut value = Vec::new();
        match self.encoding {
            Encoding::Json => encode_json(event, &mut value),
        }
        Ok(Record {
            topic,
            key,
            headers,
            value,
        })
    }
}

/// The key that keeps one entity's events in one partition: `namespace/name` for a pod, the
/// node's name for a node, the entity id otherwise; `None` for an event about no entity.
pub(super) fn routing_key(event: &UnifiedEvent) -> Option<String> {
    let entity = event.entity.as_deref()?;
    Some(match (entity.kind, &entity.namespace, &entity.name) {
        (EntityType::Pod, Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (EntityType::Node, _, Some(name)) => name.clone(),
        _ => entity.id.clone(),
    })
}

/// The W3C trace-context header (`00-<trace id>-<span id>-01`) of an event that carries one,
/// so that consumers join the producer's trace.
pub(super) fn traceparent(event: &UnifiedEvent) -> Option<String> {
    let trace = event.trace_context.as_deref()?;
    Some(format!("00-{}-{}-01", trace.trace_id, trace.span_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{Entity, EventType, Timestamp, TraceContext};

    fn event_about(entity: Option<Entity>) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(EventType::Kubernetes, "kubernetes", Timestamp(0));
        event.entity = entity.map(Box::new);
        event
    }

    fn pod() -> Entity {
        let mut entity = Entity::new(EntityType::Pod, "0b6f-uid");
        entity.namespace = Some("shop".into());
        entity.name = Some("api-7d9".into());
        entity
    }

    fn recipe(topic: &str, key: Option<&str>, headers: &[(&str, &str)]) -> Recipe {
        Recipe {
            topic: Template::parse(topic).unwrap(),
            key: key.map(|k| Template::parse(k).unwrap()),
            headers: headers
                .iter()
                .map(|(n, t)| ((*n).to_owned(), Template::parse(t).unwrap()))
                .collect(),
            encoding: Encoding::Json,
        }
    }

    #[test]
    fn routing_key_per_entity_kind() {
        assert_eq!(
            routing_key(&event_about(Some(pod()))).as_deref(),
            Some("shop/api-7d9")
        );
        let mut node = Entity::new(EntityType::Node, "uid-of-node");
        node.name = Some("worker-1".into());
        assert_eq!(
            routing_key(&event_about(Some(node))).as_deref(),
            Some("worker-1")
        );
        let bare_pod = Entity::new(EntityType::Pod, "0b6f-uid");
        assert_eq!(
            routing_key(&event_about(Some(bare_pod))).as_deref(),
            Some("0b6f-uid")
        );
        let service = Entity::new(EntityType::Service, "shop/checkout");
        assert_eq!(
            routing_key(&event_about(Some(service))).as_deref(),
            Some("shop/checkout")
        );
        assert_eq!(routing_key(&event_about(None)), None);
    }

    #[test]
    fn traceparent_from_trace_context() {
        let mut event = event_about(None);
        assert_eq!(traceparent(&event), None);
        event.trace_context = Some(Box::new(TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: None,
        }));
        assert_eq!(
            traceparent(&event).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn templates_choose_topic_key_and_headers() {
        let event = event_about(Some(pod()));
        let record = recipe(
            "tapio.{{ source }}",
            Some("{{ entity.namespace }}"),
            &[
                ("ns", "{{ entity.namespace }}"),
                ("node", "{{ entity.node }}"),
            ],
        )
        .record(&event)
        .unwrap();
        assert_eq!(record.topic, "tapio.kubernetes");
        assert_eq!(record.key.as_deref(), Some("shop"));
        assert_eq!(record.headers, vec![("ns".to_owned(), "shop".to_owned())]);
        let decoded: UnifiedEvent = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn missing_topic_field_is_an_error_and_missing_key_field_unkeyed() {
        let event = event_about(None);
        assert!(
            recipe("tapio.{{ entity.namespace }}", None, &[])
                .record(&event)
                .unwrap_err()
                .contains("entity.namespace")
        );
        let record = recipe("t", Some("{{ entity.id }}"), &[])
            .record(&event)
            .unwrap();
        assert_eq!(record.key, None);
    }
}
