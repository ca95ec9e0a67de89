//! mdBook's own diagnostics. mdBook reports problems (an `{{#include}}` it cannot resolve,
//! unbalanced HTML in a page, …) through `tracing` and carries on; [`capture`] installs a
//! subscriber for the duration of a build that prints them and hands them back, so the book
//! can refuse to build with any of them.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Collects WARN and ERROR events.
struct Collect(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        let line = format!("{level} {}: {}", event.metadata().target(), m.0);
        eprintln!("book: mdBook: {line}");
        if let Ok(mut v) = self.0.lock() {
            v.push(line);
        }
    }
}

/// Runs `f` with mdBook's WARN/ERROR events collected; returns `f`'s error or the events.
pub fn capture(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Vec<String>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Collect(seen.clone()));
    tracing::subscriber::with_default(subscriber, f)?;
    let v = seen.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_collected_and_info_is_not() {
        let seen = capture(|| {
            tracing::info!("building");
            tracing::warn!("unclosed HTML tag `<div>` found");
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("unclosed HTML tag"), "{seen:?}");
    }
}
