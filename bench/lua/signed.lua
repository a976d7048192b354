-- POSTs a signed delivery, as the dispatcher would, to measure the
-- receiver's own capacity. The signature is HMAC-SHA256("bench-secret", body).
wrk.method = "POST"
wrk.body = '{"id":1,"item":"book","qty":2,"status":"confirmed"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Fastapihooks-Signature"] = "sha256=f0a5dbbc06b0420a3a12c07e1c2dfd1e82e68e09bca163ba65701db4f1000b70"
wrk.headers["X-Fastapihooks-Event-Id"] = "evt_capacity"
