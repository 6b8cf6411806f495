-- wrk script: POST a Superna Zero Trust webhook (plain JSON) with a distinct
-- event ID per request (run tag, thread number, counter), to /webhook.
-- wrk -s post.lua URL -- TAG
local threads = {}
local counter = 0
local tag = "x"

function init(args)
   tag = args[1] or "x"
end

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

local template = '{"id":"RSW-WRK-%s-%d-%09d","severity":"CRITICAL","state":"LOCKED_OUT",' ..
   '"user":"CORP\\\\jsmith","clientIPs":["10.20.30.41"],"shares":["\\\\\\\\prod-cluster-01\\\\finance"],' ..
   '"files":["/ifs/data/finance/q2/budget.xlsx.locked"],"eventSource":"ISILON_CLUSTER",' ..
   '"nes":["prod-cluster-01"],"signalStrength":3,"threatDetectors":["Mass file rename","Honeypot access"],' ..
   '"detected":"2025-06-11T10:15:03Z","url":"https://eyeglass.corp.example/RansomwareDefender/#/events/RSW-20250611-000123"}'

local headers = { ["Content-Type"] = "application/json" }

request = function()
   counter = counter + 1
   local body = string.format(template, tag, tid, counter)
   return wrk.format("POST", "/webhook", headers, body)
end
