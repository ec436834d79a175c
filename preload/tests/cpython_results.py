"""Prints one line per test case of a regrtest --junit-xml file:
<status>\t<test id>, status being pass, skipped, failure or error."""
import sys
import xml.etree.ElementTree as ET

for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    status = "pass"
    for child in case:
        if child.tag in ("skipped", "failure", "error"):
            status = child.tag
    print(f"{status}\t{case.get('classname', '')}.{case.get('name', '')}")
