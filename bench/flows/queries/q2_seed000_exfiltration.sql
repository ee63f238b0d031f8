-- seed 000, "abnormal data transfer detection", verbatim
SELECT
  sourceaddress,
  destinationaddress,
  destinationport,
  SUM(numbytes) / 1024 / 1024 / 1024 as total_gb,
  COUNT(*) as flow_count,
  from_unixtime(MIN(starttime)) as first_seen,
  from_unixtime(MAX(endtime)) as last_seen
FROM vpc_flow_logs
WHERE
  dt >= date_format(current_date - interval '1' day, '%Y/%m/%d')
  AND destinationport IN (3306, 5432, 6379, 27017)
  AND action = 'ACCEPT'
GROUP BY sourceaddress, destinationaddress, destinationport
HAVING SUM(numbytes) > 10737418240  -- 10GB
ORDER BY total_gb DESC
LIMIT 100;
