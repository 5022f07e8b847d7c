-- Runs health checks the way Argo CD does: `obj` set as a global, only the
-- libraries Argo CD opens (base, table, and an os with time and date; no
-- string or math, and no string methods), and the returned table read as
-- the health. Usage: lua harness.lua CASES.lua, where CASES.lua returns
-- { {name=, script=, expected={status=, message=}, obj=}, ... }.
local cases = dofile(arg[1])

local base = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
  "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring",
  "type", "unpack", "xpcall",
}

local function sandbox(obj)
  local env = {
    obj = obj,
    table = table,
    os = { time = os.time, date = os.date },
    unpack = table.unpack or unpack,
  }
  for _, name in ipairs(base) do
    if env[name] == nil then
      env[name] = _G[name]
    end
  end
  env._G = env
  return env
end

local function run(case)
  local env = sandbox(case.obj)
  local chunk, err
  if setfenv then
    chunk, err = loadfile(case.script)
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = loadfile(case.script, "t", env)
  end
  if not chunk then
    return nil, err
  end
  -- Argo CD's gopher-lua gives strings no methods; neither do we.
  local string_mt = getmetatable("")
  local string_index = string_mt.__index
  string_mt.__index = nil
  local ok, hs = pcall(chunk)
  string_mt.__index = string_index
  if not ok then
    return nil, hs
  end
  if type(hs) ~= "table" then
    return nil, "health.lua returned " .. type(hs) .. ", not a table"
  end
  return hs
end

local passed, failed = 0, 0
for _, case in ipairs(cases) do
  local hs, err = run(case)
  if hs and hs.status == case.expected.status and hs.message == case.expected.message then
    passed = passed + 1
    print("ok    " .. case.name)
  else
    failed = failed + 1
    print("FAIL  " .. case.name)
    print(string.format("        want %s: %s", tostring(case.expected.status), tostring(case.expected.message)))
    if hs then
      print(string.format("        got  %s: %s", tostring(hs.status), tostring(hs.message)))
    else
      print("        error " .. tostring(err))
    end
  end
end
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
