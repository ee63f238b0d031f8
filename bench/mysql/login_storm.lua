-- A login per event: connect (with the sysbench --mysql-* options, so TLS and the password are
-- the row's), run SELECT 1, disconnect. Events per second are logins per second.
-- Used by bench/mysql/run.sh: sysbench 1.0 has no --reconnect option.

function thread_init()
  drv = sysbench.sql.driver()
end

function event()
  local con = drv:connect()
  con:query("SELECT 1")
  con:disconnect()
end
