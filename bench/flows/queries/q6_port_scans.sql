-- vertical port scans among refused records
SELECT srcaddr, dstaddr, count(DISTINCT dstport) AS ports, count(*) AS attempts
FROM flows
WHERE action = 'REJECT'
GROUP BY srcaddr, dstaddr
HAVING count(DISTINCT dstport) >= 15
ORDER BY ports DESC, srcaddr, dstaddr;
