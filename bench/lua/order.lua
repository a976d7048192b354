-- POSTs one small JSON order per request.
wrk.method = "POST"
wrk.body = '{"item":"book","qty":2}'
wrk.headers["Content-Type"] = "application/json"
