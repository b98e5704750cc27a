#!/usr/bin/env python3
# Writes Sources/JankHTTP/openapi.json, the OpenAPI document of jank-api (the contract of
# design §7). Edit this file, then: python3 scripts/generate-openapi.py > Sources/JankHTTP/openapi.json
# The tests validate the result and fuzz the running API against it.
import json
STATUSES=["available","source_only","incomplete","starting","ready","running","backoff","stopped","error"]
REASONS=["exited","signaled","oom-killed","cpu-limit","health-failed","start-timeout","handshake-failed","digest-mismatch","stopped"]
ID={"type":"string","minLength":3,"maxLength":100,"pattern":"^[a-z][a-z0-9]*(\\.[a-z0-9][a-z0-9-]*)+$",
    "description":"A plugin id: a reverse-domain name such as dev.jank.plugins.hello-world.","example":"dev.jank.plugins.hello-world"}
schemas={
 "PluginID": ID,
 "PluginStatus":{"type":"string","enum":STATUSES,"description":"available, source_only, incomplete: discovered, not registered. starting, ready, running, backoff, stopped, error: registered."},
 "LastExit":{"type":"object","required":["reason","at"],"properties":{
   "reason":{"type":"string","enum":REASONS},"code":{"type":"integer"},"signal":{"type":"integer"},
   "at":{"type":"string","description":"ISO-8601 time of the exit."}}},
 "ResourceUsage":{"type":"object","properties":{"memory_bytes":{"type":"integer"},"pids":{"type":"integer"}}},
 "PluginInfo":{"type":"object","required":["id","name","version","type","directory","binary","status","desired","auto_start","restarts","consecutive_failures","in_flight"],
   "properties":{
    "id":{"type":"string"},"name":{"type":"string"},"version":{"type":"string"},"type":{"type":"string"},
    "description":{"type":"string"},"author":{"type":"string"},"directory":{"type":"string"},"binary":{"type":"string"},
    "status":{"$ref":"#/components/schemas/PluginStatus"},
    "desired":{"type":"string","enum":["running","stopped"],"description":"What the operator asked for."},
    "auto_start":{"type":"boolean"},"pid":{"type":"integer"},"started_at":{"type":"string"},"uptime_s":{"type":"number"},
    "restarts":{"type":"integer"},"consecutive_failures":{"type":"integer"},"in_flight":{"type":"integer"},
    "last_exit":{"$ref":"#/components/schemas/LastExit"},"last_error":{"type":"string"},"next_restart_at":{"type":"string"},
    "transport":{"type":"string"},"limits":{"type":"object","additionalProperties":True},
    "limits_enforced":{"type":"string","enum":["cgroup-v2","cgroup-v1","rlimit-only"]},"limits_note":{"type":"string"},
    "usage":{"allOf":[{"$ref":"#/components/schemas/ResourceUsage"}],"description":"Current usage from the plugin's cgroup; in get, not in list."},
    "folder_problem":{"type":"string","description":"What the supervisor could not look at in the plugin's folder (more than 10 000 folders, or deeper than 32): those sources are neither hashed nor watched."},
    "isolation":{"type":"string","enum":["uid","none"],"description":"How the plugin is kept apart from the supervisor and other plugins: uid (a uid and gid of its own) or none (the supervisor's user; isolation_note says why)."},
    "isolation_note":{"type":"string"},
    "uid":{"type":"integer","description":"The uid and gid the plugin runs as, in uid isolation."}}},
 "PluginDiscoveryInfo":{"type":"object","required":["directory","status","problems"],"properties":{
    "id":{"type":"string"},"name":{"type":"string"},"version":{"type":"string"},"type":{"type":"string"},
    "directory":{"type":"string"},"status":{"$ref":"#/components/schemas/PluginStatus"},
    "problems":{"type":"array","items":{"type":"string"}}}},
 "PluginList":{"type":"object","required":["registered","unregistered"],"properties":{
    "registered":{"type":"array","items":{"$ref":"#/components/schemas/PluginInfo"}},
    "unregistered":{"type":"array","items":{"$ref":"#/components/schemas/PluginDiscoveryInfo"}}}},
 "LogsResult":{"type":"object","required":["id","lines"],"properties":{"id":{"type":"string"},"lines":{"type":"array","items":{"type":"string"}},
    "truncated":{"type":"boolean","description":"Present (true) when older lines were left out to keep the answer within 4 MiB."},
    "omitted_lines":{"type":"integer","description":"How many of the requested lines were left out."}}},
 "UnregisterResult":{"type":"object","required":["id"],"properties":{"id":{"type":"string"}}},
 "ExecuteResult":{"type":"object","required":["method","data"],"properties":{"method":{"type":"string"},"data":{"type":"object","additionalProperties":True}}},
 "SupervisorStatus":{"type":"object","required":["version","pid","uptime_s","plugins_dir","state_dir","socket","registered","statuses"],"properties":{
    "version":{"type":"string"},"pid":{"type":"integer"},"uptime_s":{"type":"number"},"plugins_dir":{"type":"string"},
    "state_dir":{"type":"string"},"socket":{"type":"string"},"registered":{"type":"integer"},
    "statuses":{"type":"object","additionalProperties":{"type":"integer"}}}},
 "APIStatus":{"type":"object","required":["status","uptime_s","supervisor_socket"],"properties":{
    "status":{"type":"string","enum":["ok"]},"uptime_s":{"type":"number"},"supervisor_socket":{"type":"string"}}},
 "Up":{"type":"object","required":["status"],"additionalProperties":False,"properties":{"status":{"type":"string","enum":["ok"]}}},
 "HealthDetails":{"type":"object","required":["api","supervisor"],"properties":{"api":{"$ref":"#/components/schemas/APIStatus"},"supervisor":{"$ref":"#/components/schemas/SupervisorStatus"}}},
 "HealthBrief":{"type":"object","required":["api","supervisor"],"additionalProperties":False,"properties":{"api":{"$ref":"#/components/schemas/Up"},"supervisor":{"$ref":"#/components/schemas/Up"}}},
 "Health":{"description":"Without a valid token only whether both are up (HealthBrief); with it the details.","oneOf":[{"$ref":"#/components/schemas/HealthBrief"},{"$ref":"#/components/schemas/HealthDetails"}]},
 "ErrorEnvelope":{"type":"object","required":["code","msg","data","request_id"],"properties":{
    "code":{"type":"integer","not":{"enum":[0]},"description":"Non-zero: the control channel's error code (e.g. -32001 not found), or -32010 unauthorized, -32011 no such route, -32012 method not allowed."},
    "msg":{"type":"string","description":"What went wrong and what to do."},
    "data":{"type":"object","required":["kind"],"additionalProperties":True,"properties":{"kind":{"type":"string","description":"invalid, not_found, conflict, unavailable, timeout, busy, plugin_error, too_large, unauthorized, no_route, method_not_allowed, internal"}}},
    "request_id":{"type":"string"}}},
 "IDBody":{"type":"object","required":["id"],"properties":{"id":{"$ref":"#/components/schemas/PluginID"}}},
 "RegisterBody":{"type":"object","required":["id"],"properties":{"id":{"$ref":"#/components/schemas/PluginID"},"rebuild":{"type":"boolean","description":"Rebuild the binary before starting."}}},
 "ExecuteBody":{"type":"object","required":["id","method"],"example":{"id":"dev.jank.plugins.hello-world","method":"greet","args":{"name":"Ada"},"timeout_ms":5000},"properties":{
    "id":{"$ref":"#/components/schemas/PluginID"},
    "method":{"type":"string","minLength":1,"description":"The plugin method to call."},
    "args":{"type":"object","additionalProperties":True,"description":"Arguments: any JSON values."},
    "payload":{"type":"string","description":"The seed's request shape: becomes args.payload."},
    "timeout_ms":{"type":"integer","minimum":1,"maximum":3600000,"description":"Deadline; capped by the plugin's exec_timeout_ms."}}},
}
def envelope(name, ref):
    schemas[name]={"type":"object","required":["code","msg","data","request_id"],"properties":{
      "code":{"type":"integer","enum":[0]},"msg":{"type":"string","enum":["ok"]},"data":ref,"request_id":{"type":"string"}}}
for n in ["PluginInfo","PluginList","LogsResult","UnregisterResult","ExecuteResult","Health"]:
    envelope(n+"Envelope",{"$ref":"#/components/schemas/"+n})
REQID_HEADER={"X-Request-ID":{"$ref":"#/components/headers/RequestID"}}
DESCR={400:"Invalid JSON, a missing or wrong field, or an invalid plugin id.",401:"The API has a token and the request did not send it (Authorization: Bearer <token>) or sent a wrong one.",
 403:"The API has no token (loopback only) and the request is not addressed to a loopback Host, or comes from a non-loopback Origin (a web page).",
 415:"The API has no token and a POST body is not declared Content-Type: application/json.",
 404:"No registered plugin with this id.",409:"Conflict, e.g. the plugin is already registered.",413:"The request body is over the limit (default 1 MiB).",
 429:"The plugin already has max_concurrency calls in flight; retry shortly.",502:"The plugin answered with its own error, crashed during the call, or (build) its build failed.",
 503:"The supervisor is unreachable (jank-api reconnects by itself), or the plugin is not running.",504:"The call's deadline passed, or jank-api's own wait for the supervisor's answer (--call-timeout; 10 s for reads)."}
responses={str(k):{"description":v,"headers":REQID_HEADER,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/ErrorEnvelope"}}}} for k,v in DESCR.items()}
# 405 belongs to the path rather than to its one operation: every path takes one method and
# answers any other with 405 and Allow. OpenAPI has no place for "other methods", so each
# operation lists it.
responses["405"]={"description":"This path does not take the request's method (e.g. GET /api/plugin/execute); Allow names the one it takes. The operation's own method never gets 405.",
 "headers":{**REQID_HEADER,"Allow":{"$ref":"#/components/headers/Allow"}},"content":{"application/json":{"schema":{"$ref":"#/components/schemas/ErrorEnvelope"}}}}
def ok(env, desc):
    return {"description":desc,"headers":REQID_HEADER,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/"+env}}}}
def errs(*codes):
    return {str(c):{"$ref":"#/components/responses/E%d"%c} for c in codes}
def op(opid, summary, desc, success, codes, params=None, body=None, security=None):
    o={"operationId":opid,"summary":summary,"description":desc,"parameters":[{"$ref":"#/components/parameters/RequestID"}]+(params or []),
       "responses":{"200":success, **errs(*codes, 403, 405, *([415] if body else []))}}
    if body: o["requestBody"]={"required":True,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/"+body}}}}
    if security is not None: o["security"]=security
    return o
idq={"name":"id","in":"query","required":True,"schema":{"$ref":"#/components/schemas/PluginID"}}
paths={
 "/api/plugin/list":{"get":op("listPlugins","List registered and discovered plugins","Registered plugins with their status and counters, and plugins found under the plugins folder but not registered (with the problems that keep them from being registered).",
     ok("PluginListEnvelope","The plugins."),[400,401,503,504],params=[{"name":"status","in":"query","required":False,"schema":{"$ref":"#/components/schemas/PluginStatus"}}])},
 "/api/plugin/get":{"get":op("getPlugin","One registered plugin","Status, pid, uptime, restarts, last exit, last error, limits and usage.",ok("PluginInfoEnvelope","The plugin."),[400,401,404,503,504],params=[idq])},
 "/api/plugin/logs":{"get":op("pluginLogs","The plugin's last output lines","The last lines the plugin wrote to stdout and stderr (hclog JSON lines are parsed), or of its last build's log.",ok("LogsResultEnvelope","The lines, oldest first."),[400,401,404,503,504],
     params=[idq,{"name":"tail","in":"query","required":False,"schema":{"type":"integer","minimum":1,"maximum":1000,"default":100}},
             {"name":"source","in":"query","required":False,"description":"plugin: its stdout and stderr; build: its last build's log.","schema":{"type":"string","enum":["plugin","build"],"default":"plugin"}}])},
 "/api/plugin/register":{"post":op("registerPlugin","Register a discovered plugin and start it","Builds it first when its binary is missing or its sources changed.",ok("PluginInfoEnvelope","The plugin, started (or in error with the reason)."),[400,401,404,409,413,503,504],body="RegisterBody")},
 "/api/plugin/unregister":{"post":op("unregisterPlugin","Stop a plugin and forget it","",ok("UnregisterResultEnvelope","The id that was unregistered."),[400,401,404,413,503,504],body="IDBody")},
 "/api/plugin/start":{"post":op("startPlugin","Start a registered plugin","Also leaves error or backoff with a fresh restart budget.",ok("PluginInfoEnvelope","The plugin."),[400,401,404,409,413,503,504],body="IDBody")},
 "/api/plugin/stop":{"post":op("stopPlugin","Stop a registered plugin","Shutdown RPC, stop_timeout_ms, SIGTERM, 1 s, SIGKILL.",ok("PluginInfoEnvelope","The plugin, stopped."),[400,401,404,409,413,503,504],body="IDBody")},
 "/api/plugin/restart":{"post":op("restartPlugin","Restart a registered plugin","",ok("PluginInfoEnvelope","The plugin."),[400,401,404,409,413,503,504],body="IDBody")},
 "/api/plugin/build":{"post":op("buildPlugin","Rebuild a registered plugin","A running plugin is swapped onto the new binary with no failed call; a failed build (502, data.build_log_tail) leaves the old binary serving.",
     ok("PluginInfoEnvelope","The plugin, on its new binary."),[400,401,404,409,413,502,503,504],body="IDBody")},
 "/api/plugin/execute":{"post":op("executePlugin","Call a method of a plugin","The deadline is min(timeout_ms, exec_timeout_ms). A call that arrives while the plugin restarts waits for it within its deadline.",
     ok("ExecuteResultEnvelope","The method's result."),[400,401,404,409,413,429,502,503,504],body="ExecuteBody")},
 "/api/health":{"get":op("health","jank-api and supervisor status","Needs no token. Without a valid one it says only whether jank-api and the supervisor are up; with it, the API's uptime and socket and the supervisor's status. 503 (data.supervisor null) while the supervisor is unreachable.",ok("HealthEnvelope","Both are up."),[503,504],security=[])},
 "/metrics":{"get":{"operationId":"metrics","summary":"Prometheus metrics","description":"The supervisor's metrics (executes by plugin and outcome, execute latency, restarts, plugins by status) then jank-api's own (requests, latency, jank_supervisor_up).",
     "parameters":[{"$ref":"#/components/parameters/RequestID"}],
     "responses":{"200":{"description":"Prometheus text exposition 0.0.4.","headers":REQID_HEADER,"content":{"text/plain":{"schema":{"type":"string"}}}},**errs(401,403,405)}}},
 "/api/openapi.json":{"get":{"operationId":"openapi","summary":"This document","parameters":[{"$ref":"#/components/parameters/RequestID"}],
     "responses":{"200":{"description":"The OpenAPI 3 document of the API.","headers":REQID_HEADER,"content":{"application/json":{"schema":{"type":"object"}}}},**errs(401,403,405)}}},
}
doc={"openapi":"3.0.3",
 "info":{"title":"Jank API","version":"0.1.0","description":
   "HTTP API of Jank, served by jank-api in front of jank-supervisor's control socket. Every JSON answer is an envelope: "
   "{\"code\":0,\"msg\":\"ok\",\"data\":...,\"request_id\":\"...\"} on success; on failure a non-zero code, a msg that says what went wrong and what to do, "
   "data with the error's kind and details, and the HTTP status: 400 invalid, 401 unauthorized, 403 not a loopback Host or Origin (no token), 404 unknown plugin or route, 405 wrong method (with Allow), "
   "409 conflict, 413 too large, 415 a POST body that is not application/json (no token), 429 busy, 502 plugin error, 503 supervisor or plugin unavailable, 504 timeout (the plugin's deadline, or jank-api's own wait for the supervisor: --call-timeout, 10 s for reads). X-Request-ID is honoured and echoed. "
   "When jank-api has a token, every route but /api/health needs Authorization: Bearer <token>."},
 "servers":[{"url":"http://127.0.0.1:8080"}],
 "security":[{"bearerAuth":[]},{}],
 "paths":paths,
 "components":{"schemas":schemas,
   "securitySchemes":{"bearerAuth":{"type":"http","scheme":"bearer","description":"Only when jank-api is started with a token (JANK_API_TOKEN or --token-file)."}},
   "parameters":{"RequestID":{"name":"X-Request-ID","in":"header","required":False,"description":"Echoed back. Any value is accepted; one that is not 1-128 visible ASCII characters is replaced by a new id rather than echoed.","schema":{"type":"string"}}},
   "headers":{"RequestID":{"description":"The request's id (the caller's, or a new one).","schema":{"type":"string"}},
     "Allow":{"description":"The one method the path takes.","required":True,"schema":{"type":"string","enum":["GET","POST"]}}},
   "responses":{"E%s"%k:v for k,v in responses.items()}}}
print(json.dumps(doc, indent=2))
