-- bytes per source: a hash aggregation over about a million distinct addresses
SELECT srcaddr, sum(bytes) AS total_bytes, count(*) AS flows
FROM flows
GROUP BY srcaddr
ORDER BY total_bytes DESC, srcaddr
LIMIT 10;
