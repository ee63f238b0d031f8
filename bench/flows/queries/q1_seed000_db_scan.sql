-- seed 000, "database port scan detection", verbatim
SELECT
  sourceaddress,
  COUNT(DISTINCT destinationaddress) as target_count,
  COUNT(*) as connection_attempts,
  MIN(from_unixtime(starttime)) as first_seen,
  MAX(from_unixtime(endtime)) as last_seen
FROM vpc_flow_logs
WHERE
  dt >= date_format(current_date - interval '7' day, '%Y/%m/%d')
  AND destinationport = 3306
  AND action = 'REJECT'
GROUP BY sourceaddress
HAVING COUNT(DISTINCT destinationaddress) > 5
ORDER BY connection_attempts DESC
LIMIT 100;
