-- Argo CD health check for fleetsync.dev SyncJob and SyncSchedule (one script for both kinds).
--
-- Argo CD has no generic condition handling for custom kinds: without a script a SyncJob or
-- SyncSchedule is never Progressing, Degraded or Suspended. Install it under
-- resource.customizations.health.fleetsync.dev_SyncJob and ..._SyncSchedule in argocd-cm.
--
-- Written for Argo CD's default sandbox: no string/os/math library (useOpenLibs is off),
-- only the base and table libraries, so messages are built with `..` and tostring.
--
-- Verdicts, in order:
--   no status yet, or metadata.generation ahead of status.observedGeneration -> Progressing
--     (the controller has not judged the current spec; kstatus says InProgress too)
--   SyncJob:
--     Failed (incl. DeadlineExceeded, invalid spec, pods that cannot start) -> Degraded,
--       with the Failed condition's message
--     Succeeded -> Healthy
--     PartiallySucceeded -> Healthy, the message saying how many items failed. Why not
--       Degraded: the run finished inside the failure budget the user set
--       (spec.deadLetter.maxItemFailures; over it the run is Failed), the failed items are
--       dead-lettered and retried with `fleetsync retry-failed`, and kstatus (Flux, Helm
--       --wait) and `kubectl wait --for=condition=Complete` also call it done. Degraded would
--       turn the whole Application red and fail sync waves after every vendor hiccup; the
--       object's own Degraded=True condition still says so for those who alert on it.
--     Suspended phase or spec.suspend (while not finished) -> Suspended
--     Pending, Running, anything else -> Progressing
--   SyncSchedule:
--     Stalled=True (an invalid spec; the message names the field) -> Degraded
--     spec.suspend or Suspended=True -> Suspended
--     Ready=True -> Healthy
--     otherwise -> Progressing

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(status, kind)
  local c = condition(status, kind)
  return c ~= nil and c.status == "True"
end

local function message_of(status, kind, fallback)
  local c = condition(status, kind)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local function verdict(status, message)
  return { status = status, message = message }
end

local function not_observed(o)
  if o.status == nil then
    return "Waiting for the fleetsync controller to observe the " .. o.kind
  end
  local generation = o.metadata.generation
  local observed = o.status.observedGeneration
  if generation ~= nil and observed ~= nil and observed ~= generation then
    return "Waiting for the fleetsync controller to observe generation " .. tostring(generation)
      .. " (observed " .. tostring(observed) .. ")"
  end
  return nil
end

local function syncjob(o)
  local s = o.status
  local phase = s.phase
  if phase == "Failed" then
    return verdict("Degraded", message_of(s, "Failed", message_of(s, "Stalled", "SyncJob failed")))
  end
  if phase == "Succeeded" then
    return verdict("Healthy", message_of(s, "Complete", "Succeeded"))
  end
  if phase == "PartiallySucceeded" then
    return verdict("Healthy", "PartiallySucceeded: "
      .. message_of(s, "Complete", "some items failed and were dead-lettered"))
  end
  if phase == "Suspended" or (o.spec ~= nil and o.spec.suspend == true) then
    return verdict("Suspended", message_of(s, "Suspended", "SyncJob is suspended"))
  end
  local message = message_of(s, "Reconciling", message_of(s, "Ready", "SyncJob is " .. tostring(phase or "starting")))
  if is_true(s, "Degraded") then
    message = message .. "; " .. message_of(s, "Degraded", "degraded")
  end
  return verdict("Progressing", message)
end

local function syncschedule(o)
  local s = o.status
  if is_true(s, "Stalled") then
    return verdict("Degraded", message_of(s, "Stalled", "SyncSchedule is stalled"))
  end
  if (o.spec ~= nil and o.spec.suspend == true) or is_true(s, "Suspended") then
    return verdict("Suspended", message_of(s, "Suspended", "SyncSchedule is suspended: no new runs"))
  end
  if is_true(s, "Ready") then
    return verdict("Healthy", message_of(s, "Ready", "SyncSchedule is ready"))
  end
  return verdict("Progressing", message_of(s, "Ready", "Waiting for the SyncSchedule to be Ready"))
end

local waiting = not_observed(obj)
if waiting ~= nil then
  return verdict("Progressing", waiting)
end
if obj.kind == "SyncSchedule" then
  return syncschedule(obj)
end
return syncjob(obj)
