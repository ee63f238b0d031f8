-- a full scan with a few groups
SELECT action, protocol, count(*) AS flows, sum(packets) AS packets, sum(bytes) AS bytes
FROM flows
GROUP BY 1, 2
ORDER BY 1, 2;
