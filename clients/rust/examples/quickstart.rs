//! Publishes a few jobs and consumes them until the queue is idle:
//! `ORDERLY_URL=http://127.0.0.1:8080 cargo run -p orderly-client --example quickstart`.

use orderly_client::{Client, Consumer, Publish};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), orderly_client::Error> {
    let url = std::env::var("ORDERLY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let email = format!("demo-{}@example.com", uuid::Uuid::new_v4().simple());
    Client::register(&url, &email, "correct horse battery").await?;
    let client = Client::login(&url, &email, "correct horse battery").await?;

    client
        .put_queue("emails", &json!({"lease_ms": 5000}))
        .await?;
    for n in 0..3 {
        let job = Publish::new(json!({"n": n})).key(format!("user-{}", n % 2));
        client.publish("emails", job).await?;
    }
    let batch = [Publish::new(json!({"n": 3})).key("user-1")];
    client.publish_batch("emails", &batch).await?;

    Consumer::new(client, "emails")
        .wait_ms(1000)
        .run(
            |job| async move {
                println!("{} {} {}", job.seq, job.key, job.payload);
                Ok(json!({"sent": true}))
            },
            true,
        )
        .await
}
