-- The claim query finds an alert's open deliveries through the partial
-- index deliveries_open (it names the states as literals).  The full index
-- on the same columns served no query, and cost every delivery a page
-- write at a random place of it: about 2 KiB of WAL per event.
DROP INDEX IF EXISTS deliveries_order;
