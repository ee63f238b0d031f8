-- seed 002's rule input (Counter(ip_port_list).most_common(60)) as SQL
SELECT dstaddr, dstport, count(*) AS flows
FROM flows
WHERE action = 'ACCEPT' AND protocol = 6
GROUP BY dstaddr, dstport
ORDER BY flows DESC, dstaddr, dstport
LIMIT 60;
